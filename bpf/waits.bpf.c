/* waits.bpf.c: waits on folios under writeback, FUSE bdis only.
 * WAIT_TIMING 1: the tracepoint opens a pending wait (per thread); sched_switch marks it asleep
 * when the thread goes to an uninterruptible sleep inside the wait function, and emits it with
 * its duration when the thread runs again. WAIT_TIMING 2 (kprobe plan): the entry probe opens
 * it, the tracepoint marks it as a FUSE wait, the return probe emits it (kprobes.bpf.c). */

BPF_HASH(wait_pending, u32, struct wait_pending, MAX_PENDING);
BPF_PERCPU_HASH(wait_hist, struct wait_hist_key, struct hist_value, WAIT_HIST_ENTRIES);
/* Entries in wait_pending: sched_switch returns at once while there are none. */
BPF_ARRAY(waits_open, s64, 1);

#define TASK_UNINTERRUPTIBLE_BIT 0x2

static __always_inline void waits_open_add(s64 by)
{
    u32 zero = 0;
    s64 *open = waits_open.lookup(&zero);
    if (open)
        __sync_fetch_and_add(open, by);
}

/* Open the wait of task ``id``: the caller filled what it knows; tgid and comm are set here,
 * and a full pending map is counted. Every probe that opens a wait goes through here. */
static __always_inline void open_wait(u64 id, struct wait_pending *w)
{
    u32 pid = id;
    w->tgid = id >> 32;
    bpf_get_current_comm(&w->comm, sizeof(w->comm));
    struct wait_pending *old = wait_pending.lookup(&pid);
    if (old) {
        __builtin_memcpy(old, w, sizeof(*w));
        return;
    }
    if (wait_pending.insert(&pid, w))
        count(CNT_PENDING_FULL, 1);
    else
        waits_open_add(1);
}

/* Forget task ``pid``'s wait. */
static __always_inline void close_wait(u32 pid)
{
    if (wait_pending.delete(&pid) == 0)
        waits_open_add(-1);
}

/* A wait ended: filed in its histogram; a row (ring buffer event) from ROW_WAIT_NS on. */
static __always_inline void end_wait(struct wait_pending *w, u32 pid, u64 now, u32 source)
{
    u64 took = now - w->ts_ns;
    struct wait_hist_key hk = {};
    __builtin_memcpy(hk.bdi, w->bdi, sizeof(hk.bdi));
    hk.stack_id = w->stack_id;
    hk.bucket = hist_bucket(took);
    struct hist_value zero = {};
    hist_file(wait_hist.lookup_or_try_init(&hk, &zero), took, 0, 0);
    if (took < ROW_WAIT_NS)
        return;
    struct wait_event *e = events.ringbuf_reserve(sizeof(struct wait_event));
    if (!e) {
        count_lost(EV_WAIT);
        return;
    }
    e->kind = EV_WAIT;
    e->pid = pid;
    e->tgid = w->tgid;
    e->stack_id = w->stack_id;
    e->ts_ns = w->ts_ns;
    e->duration_ns = took;
    e->ino = w->ino;
    e->index = w->index;
    e->source = source;
    e->pad = 0;
    __builtin_memcpy(e->comm, w->comm, sizeof(e->comm));
    __builtin_memcpy(e->bdi, w->bdi, sizeof(e->bdi));
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    count(CNT_WAIT_EMITTED, 1);
}

static __always_inline int on_wait_tracepoint(void *ctx, const char *bdi, u64 ino, u64 index)
{
    if (!is_fuse_bdi(bdi)) {
        count(CNT_WAIT_TP_OTHER, 1);
        return 0;
    }
    count(CNT_WAIT_TP_FUSE, 1);
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id, tgid = id >> 32;
    if (!tgid_selected(tgid))
        return 0;
#if WAIT_TIMING == 2
    struct wait_pending *open = wait_pending.lookup(&pid);
    if (!open || open->asleep)
        return 0;
    open->asleep = 1;
    open->sleep_ts_ns = bpf_ktime_get_ns();
    open->ino = ino;
    open->index = index;
    open->stack_id = stacks.get_stackid(ctx, 0);
    bpf_probe_read_kernel(&open->bdi, sizeof(open->bdi), bdi);
#else
    struct wait_pending *old = wait_pending.lookup(&pid);
    if (old && !old->asleep)
        count(CNT_WAIT_NO_SLEEP, 1);
    struct wait_pending w = {};
    w.ts_ns = bpf_ktime_get_ns();
    w.ino = ino;
    w.index = index;
    w.stack_id = stacks.get_stackid(ctx, 0);
    bpf_probe_read_kernel(&w.bdi, sizeof(w.bdi), bdi);
    open_wait(id, &w);
#endif
    return 0;
}

#if WAIT_TP == 1
TRACEPOINT_PROBE(writeback, folio_wait_writeback)
{
    return on_wait_tracepoint(args, args->name, args->ino, args->index);
}
#elif WAIT_TP == 2
TRACEPOINT_PROBE(writeback, wait_on_page_writeback)
{
    return on_wait_tracepoint(args, args->name, args->ino, args->index);
}
#endif

#if WAIT_TIMING == 1
/* Is the task that is switching out inside the wait function? (a return address in it among
 * the first frames of its kernel stack). Without the address range, accept any D sleep. */
static __always_inline int sleeping_in_wait_fn(void *ctx)
{
    if (WAIT_FN_START == 0)
        return 1;
    u64 frames[SLEEP_STACK_DEPTH] = {};
    int got = bpf_get_stack(ctx, frames, sizeof(frames), 0);
    if (got <= 0)
        return 1;
#pragma unroll
    for (int i = 0; i < SLEEP_STACK_DEPTH; i++) {
        if (frames[i] >= WAIT_FN_START && frames[i] < WAIT_FN_END)
            return 1;
    }
    return 0;
}

/* Whether any wait is open: the common case (none) costs sched_switch one array read. */
static __always_inline int any_wait_open(void)
{
    u32 zero = 0;
    s64 *open = waits_open.lookup(&zero);
    return open && *open != 0;
}

static __always_inline int on_switch(void *ctx, u32 prev_pid, u64 prev_state, int preempted,
                                     u32 next_pid)
{
    struct wait_pending *w = wait_pending.lookup(&prev_pid);
    if (w && !w->asleep && !preempted) {
        if ((prev_state & TASK_UNINTERRUPTIBLE_BIT) && sleeping_in_wait_fn(ctx)) {
            w->asleep = 1;
            w->sleep_ts_ns = bpf_ktime_get_ns();
        } else {
            count(CNT_WAIT_NO_SLEEP, 1);
            close_wait(prev_pid);
        }
    }
    if (next_pid == 0)
        return 0;
    w = wait_pending.lookup(&next_pid);
    if (w && w->asleep) {
        end_wait(w, next_pid, bpf_ktime_get_ns(), SRC_SCHED_SWITCH);
        close_wait(next_pid);
    }
    return 0;
}

#if SCHED_SWITCH_RAW
/* sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next
 *              [, unsigned int prev_state]); task_struct offsets from BTF. */
RAW_TRACEPOINT_PROBE(sched_switch)
{
    if (!any_wait_open())
        return 0;
    void *prev = (void *)ctx->args[1];
    void *next = (void *)ctx->args[2];
    u32 prev_pid = 0, next_pid = 0;
    bpf_probe_read_kernel(&prev_pid, sizeof(prev_pid), prev + TASK_PID_OFF);
    bpf_probe_read_kernel(&next_pid, sizeof(next_pid), next + TASK_PID_OFF);
#if SCHED_SWITCH_STATE_ARG
    u64 prev_state = (u32)ctx->args[3];
#else
    u32 state = 0;
    bpf_probe_read_kernel(&state, sizeof(state), prev + TASK_STATE_OFF);
    u64 prev_state = state;
#endif
    return on_switch(ctx, prev_pid, prev_state, ctx->args[0] != 0, next_pid);
}
#else
/* The tracepoint reports a preempted task as TASK_REPORT_MAX (0x100 and up) or running (0). */
TRACEPOINT_PROBE(sched, sched_switch)
{
    if (!any_wait_open())
        return 0;
    u64 state = args->prev_state;
    return on_switch(args, args->prev_pid, state, state == 0 || state >= 0x100, args->next_pid);
}
#endif
#endif /* WAIT_TIMING == 1 */
