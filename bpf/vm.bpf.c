/* vm.bpf.c: reclaim, migration and compaction, system-wide. Begin/end pairs are joined per
 * thread in the kernel; reclaim scans that met no dirty or writeback folios are only summed. */
#if VM_MIGRATE
#include <linux/migrate_mode.h>
#endif

#if VM_DIRECT_RECLAIM || VM_MEMCG_RECLAIM || VM_MIGRATE == 2 || VM_COMPACTION
BPF_HASH(vm_pending, struct vm_key, struct vm_pending, MAX_PENDING);

static __always_inline int vm_begin(u32 vm_kind, s32 mode, s32 reason)
{
    struct vm_key key = {};
    key.pid = bpf_get_current_pid_tgid();
    key.vm_kind = vm_kind;
    struct vm_pending p = {};
    p.ts_ns = bpf_ktime_get_ns();
    p.mode = mode;
    p.reason = reason;
    if (vm_pending.update(&key, &p))
        count(CNT_PENDING_FULL, 1);
    return 0;
}
#endif

/* A vm event for the current task, stamped now; NULL (and counted lost) if the ring is full. */
static __always_inline struct vm_event *vm_reserve(u32 vm_kind)
{
    struct vm_event *e = events.ringbuf_reserve(sizeof(struct vm_event));
    if (!e) {
        count_lost(EV_VM);
        return NULL;
    }
    u64 id = bpf_get_current_pid_tgid();
    __builtin_memset(e, 0, sizeof(*e));
    e->kind = EV_VM;
    e->vm_kind = vm_kind;
    e->pid = id;
    e->tgid = id >> 32;
    e->ts_ns = bpf_ktime_get_ns();
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    return e;
}

#if VM_DIRECT_RECLAIM || VM_MEMCG_RECLAIM || VM_MIGRATE == 2 || VM_COMPACTION
/* Join with the begin of the same kind on this thread: begin time, duration, mode/reason. */
static __always_inline void vm_join(struct vm_event *e)
{
    struct vm_key key = {};
    key.pid = e->pid;
    key.vm_kind = e->vm_kind;
    struct vm_pending *p = vm_pending.lookup(&key);
    if (!p)
        return;
    e->duration_ns = e->ts_ns - p->ts_ns;
    e->ts_ns = p->ts_ns;
    e->mode = p->mode;
    e->reason = p->reason;
    e->paired = 1;
    vm_pending.delete(&key);
}
#endif

#if VM_DIRECT_RECLAIM || VM_MEMCG_RECLAIM
/* The end of a reclaim begun on this thread: one event with its duration. */
static __always_inline int vm_reclaim_end(u32 kind, u64 nr_reclaimed)
{
    struct vm_event *e = vm_reserve(kind);
    if (!e)
        return 0;
    vm_join(e);
    e->nr_reclaimed = nr_reclaimed;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
#endif

#if VM_DIRECT_RECLAIM
TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_begin)
{
    return vm_begin(VM_DIRECT, 0, 0);
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_end)
{
    return vm_reclaim_end(VM_DIRECT, args->nr_reclaimed);
}
#endif

#if VM_MEMCG_RECLAIM
TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_begin)
{
    return vm_begin(VM_MEMCG, 0, 0);
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_end)
{
    return vm_reclaim_end(VM_MEMCG, args->nr_reclaimed);
}
#endif

#if VM_THROTTLED
TRACEPOINT_PROBE(vmscan, mm_vmscan_throttled)
{
    struct vm_event *e = vm_reserve(VM_THROTTLE);
    if (!e)
        return 0;
    e->usec_delayed = args->usec_delayed;
    e->reason = args->reason;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
#endif

#if VM_SHRINK_INACTIVE
TRACEPOINT_PROBE(vmscan, mm_vmscan_lru_shrink_inactive)
{
    if (!args->nr_dirty && !args->nr_writeback && !args->nr_immediate) {
        count(CNT_SHRINK_CALLS, 1);
        count(CNT_SHRINK_SCANNED, args->nr_scanned);
        count(CNT_SHRINK_RECLAIMED, args->nr_reclaimed);
        return 0;
    }
    struct vm_event *e = vm_reserve(VM_SHRINK);
    if (!e)
        return 0;
    e->nr_scanned = args->nr_scanned;
    e->nr_reclaimed = args->nr_reclaimed;
    e->nr_dirty = args->nr_dirty;
    e->nr_writeback = args->nr_writeback;
    e->nr_immediate = args->nr_immediate;
    e->reason = args->reclaim_flags;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
#endif

#if VM_MIGRATE == 2
TRACEPOINT_PROBE(migrate, mm_migrate_pages_start)
{
    return vm_begin(VM_MIGRATE_PAGES, args->mode, args->reason);
}
#endif

#if VM_MIGRATE
TRACEPOINT_PROBE(migrate, mm_migrate_pages)
{
    struct vm_event *e = vm_reserve(VM_MIGRATE_PAGES);
    if (!e)
        return 0;
#if VM_MIGRATE == 2
    vm_join(e);
#endif
    e->succeeded = args->succeeded;
    e->failed = args->failed;
    e->mode = args->mode;
    e->reason = args->reason;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
#endif

#if VM_COMPACTION
TRACEPOINT_PROBE(compaction, mm_compaction_begin)
{
    return vm_begin(VM_COMPACT, args->sync, 0);
}

TRACEPOINT_PROBE(compaction, mm_compaction_end)
{
    struct vm_event *e = vm_reserve(VM_COMPACT);
    if (!e)
        return 0;
    vm_join(e);
    e->status = args->status;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
#endif
