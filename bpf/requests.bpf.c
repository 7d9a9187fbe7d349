/* requests.bpf.c: FUSE requests on the selected connections, send joined with end on
 * (connection, unique); the tasks that end requests are recorded as the server's threads. */
#include <uapi/linux/fuse.h>

BPF_HASH(requests_pending, struct request_key, struct request_pending, MAX_INFLIGHT);
BPF_HASH(server_threads, struct server_key, struct server_thread, 4096);
BPF_HASH(writes_inflight, u32, struct inflight_writes, 1024);
BPF_HASH(opcode_stats, u32, struct opcode_stats, 128);
BPF_PERCPU_ARRAY(request_budget, struct event_budget, 1);

#ifndef REQ_EVENTS_PER_SEC
#define REQ_EVENTS_PER_SEC 20000
#endif
#ifndef REQ_ALWAYS_NS
#define REQ_ALWAYS_NS 1000000ULL
#endif

/* Stream this ended request? Slow ones always; fast ones while this CPU's budget lasts. */
static __always_inline int request_in_budget(u64 now, u64 took)
{
    if (took >= REQ_ALWAYS_NS)
        return 1;
    u32 zero = 0;
    struct event_budget *budget = request_budget.lookup(&zero);
    if (!budget)
        return 1;
    if (now - budget->window_start_ns >= 1000000000ULL) {
        budget->window_start_ns = now;
        budget->sent = 0;
    }
    if (budget->sent >= REQ_EVENTS_PER_SEC)
        return 0;
    budget->sent += 1;
    return 1;
}

TRACEPOINT_PROBE(fuse, fuse_request_send)
{
    u32 connection = args->connection;
    if (!fuse_conns.lookup(&connection))
        return 0;
    count(CNT_REQ_SENT, 1);
    u64 id = bpf_get_current_pid_tgid();
    struct request_key key = {};
    key.connection = connection;
    key.unique = args->unique;
    struct request_pending req = {};
    req.ts_ns = bpf_ktime_get_ns();
    req.opcode = args->opcode;
    req.len = args->len;
    req.pid = id;
    req.tgid = id >> 32;
    bpf_get_current_comm(&req.comm, sizeof(req.comm));
    if (requests_pending.update(&key, &req)) {
        count(CNT_PENDING_FULL, 1);
        return 0;
    }
    if (req.opcode == FUSE_WRITE) {
        struct inflight_writes zero = {};
        struct inflight_writes *w = writes_inflight.lookup_or_try_init(&connection, &zero);
        if (w) {
            s64 now = __sync_fetch_and_add(&w->now, 1) + 1;
            if (now > w->max)
                w->max = now;
        }
    }
    return 0;
}

TRACEPOINT_PROBE(fuse, fuse_request_end)
{
    u32 connection = args->connection;
    if (!fuse_conns.lookup(&connection))
        return 0;
    count(CNT_REQ_ENDED, 1);
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();

    struct server_key skey = {};
    skey.connection = connection;
    skey.pid = id;
    struct server_thread *thread = server_threads.lookup(&skey);
    if (thread) {
        __sync_fetch_and_add(&thread->replies, 1);
    } else {
        struct server_thread fresh = {};
        fresh.replies = 1;
        fresh.tgid = id >> 32;
        bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
        server_threads.update(&skey, &fresh);
    }

    struct request_key key = {};
    key.connection = connection;
    key.unique = args->unique;
    struct request_pending *req = requests_pending.lookup(&key);
    if (!req) {
        count(CNT_REQ_END_UNMATCHED, 1);
        return 0;
    }
    u32 opcode = req->opcode;
    u64 took = now - req->ts_ns;
    if (opcode == FUSE_WRITE) {
        struct inflight_writes *w = writes_inflight.lookup(&connection);
        if (w)
            __sync_fetch_and_add(&w->now, -1);
    }
    struct opcode_stats zero = {};
    struct opcode_stats *stats = opcode_stats.lookup_or_try_init(&opcode, &zero);
    if (stats) {
        __sync_fetch_and_add(&stats->count, 1);
        __sync_fetch_and_add(&stats->total_ns, took);
        if (took > stats->max_ns)
            stats->max_ns = took;
        if (args->error)
            __sync_fetch_and_add(&stats->errors, 1);
    }

    if (!request_in_budget(now, took)) {
        count(CNT_REQ_SUMMED, 1);
        requests_pending.delete(&key);
        return 0;
    }
    struct request_event *e = events.ringbuf_reserve(sizeof(struct request_event));
    if (!e) {
        count_lost(LOST_REQUEST);
        requests_pending.delete(&key);
        return 0;
    }
    e->kind = EV_REQUEST;
    e->connection = connection;
    e->unique = key.unique;
    e->send_ts_ns = req->ts_ns;
    e->end_ts_ns = now;
    e->opcode = opcode;
    e->len = req->len;
    e->error = args->error;
    e->pid = req->pid;
    e->tgid = req->tgid;
    e->end_pid = id;
    e->end_tgid = id >> 32;
    e->pad = 0;
    __builtin_memcpy(e->comm, req->comm, sizeof(e->comm));
    bpf_get_current_comm(&e->end_comm, sizeof(e->end_comm));
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    requests_pending.delete(&key);
    return 0;
}
