/* throttle.bpf.c: dirty throttling (balance_dirty_pages) pauses on FUSE bdis.
 *
 * Every field but bdi is read through its TPF_BALANCE_DIRTY_PAGES_* define: the name the field
 * has on this kernel (wb_dirty is bdi_dirty on older ones), left undefined when the kernel has
 * none of its names. Such a field stays 0 here and its column is null in the capture
 * (meta.json absent_columns; fusewb/tracers/tpfields.py). */

TRACEPOINT_PROBE(writeback, balance_dirty_pages)
{
    if (!is_fuse_bdi(args->bdi)) {
        count(CNT_THROTTLE_OTHER, 1);
        return 0;
    }
    u64 id = bpf_get_current_pid_tgid();
    if (!tgid_selected(id >> 32))
        return 0;
    struct throttle_event *e = events.ringbuf_reserve(sizeof(struct throttle_event));
    if (!e) {
        count_lost(EV_THROTTLE);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->kind = EV_THROTTLE;
    e->pid = id;
    e->tgid = id >> 32;
    e->ts_ns = bpf_ktime_get_ns();
#ifdef TPF_BALANCE_DIRTY_PAGES_PAUSE
    e->pause_ms = args->TPF_BALANCE_DIRTY_PAGES_PAUSE;
#endif
#ifdef TPF_BALANCE_DIRTY_PAGES_PERIOD
    e->period_ms = args->TPF_BALANCE_DIRTY_PAGES_PERIOD;
#endif
#ifdef TPF_BALANCE_DIRTY_PAGES_PAUSED
    e->paused_ms = args->TPF_BALANCE_DIRTY_PAGES_PAUSED;
#endif
#ifdef TPF_BALANCE_DIRTY_PAGES_THINK
    e->think_ms = args->TPF_BALANCE_DIRTY_PAGES_THINK;
#endif
#ifdef TPF_BALANCE_DIRTY_PAGES_DIRTY
    e->dirty = args->TPF_BALANCE_DIRTY_PAGES_DIRTY;
#endif
#ifdef TPF_BALANCE_DIRTY_PAGES_LIMIT
    e->limit = args->TPF_BALANCE_DIRTY_PAGES_LIMIT;
#endif
#ifdef TPF_BALANCE_DIRTY_PAGES_SETPOINT
    e->setpoint = args->TPF_BALANCE_DIRTY_PAGES_SETPOINT;
#endif
#ifdef TPF_BALANCE_DIRTY_PAGES_WB_DIRTY
    e->wb_dirty = args->TPF_BALANCE_DIRTY_PAGES_WB_DIRTY;
#endif
#ifdef TPF_BALANCE_DIRTY_PAGES_WB_SETPOINT
    e->wb_setpoint = args->TPF_BALANCE_DIRTY_PAGES_WB_SETPOINT;
#endif
#ifdef TPF_BALANCE_DIRTY_PAGES_DIRTY_RATELIMIT
    e->dirty_ratelimit = args->TPF_BALANCE_DIRTY_PAGES_DIRTY_RATELIMIT;
#endif
#ifdef TPF_BALANCE_DIRTY_PAGES_TASK_RATELIMIT
    e->task_ratelimit = args->TPF_BALANCE_DIRTY_PAGES_TASK_RATELIMIT;
#endif
#ifdef TPF_BALANCE_DIRTY_PAGES_DIRTIED
    e->dirtied = args->TPF_BALANCE_DIRTY_PAGES_DIRTIED;
#endif
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    bpf_probe_read_kernel(&e->bdi, sizeof(e->bdi), args->bdi);
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
