/* throttle.bpf.c: dirty throttling (balance_dirty_pages) pauses on FUSE bdis. */

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
        count_lost(LOST_THROTTLE);
        return 0;
    }
    e->kind = EV_THROTTLE;
    e->pid = id;
    e->tgid = id >> 32;
    e->pad = 0;
    e->ts_ns = bpf_ktime_get_ns();
    e->pause_ms = args->pause;
    e->period_ms = args->period;
    e->paused_ms = args->paused;
    e->think_ms = args->think;
    e->dirty = args->dirty;
    e->limit = args->limit;
    e->setpoint = args->setpoint;
    e->wb_dirty = args->wb_dirty;
    e->wb_setpoint = args->wb_setpoint;
    e->dirty_ratelimit = args->dirty_ratelimit;
    e->task_ratelimit = args->task_ratelimit;
    e->dirtied = args->dirtied;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    bpf_probe_read_kernel(&e->bdi, sizeof(e->bdi), args->bdi);
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
