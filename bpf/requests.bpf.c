/* requests.bpf.c: FUSE requests on the selected connections, send joined with end in the
 * kernel on the request pointer (FUSE_REQ_PTR: 1 kprobes before 6.12, 2 the raw fuse:*
 * tracepoints), else on (connection, unique) from the fuse:* tracepoints' fields, which do not
 * expose the request; the tasks that read or end requests are recorded as the server's threads. */
#include <uapi/linux/fuse.h>

BPF_HASH(requests_pending, struct request_key, struct request_pending, MAX_INFLIGHT);
BPF_HASH(server_threads, struct server_key, struct server_thread, 4096);
BPF_HASH(writes_inflight, u32, struct inflight_writes, 1024);
BPF_HASH(opcode_stats, u32, struct opcode_stats, 128);
BPF_PERCPU_ARRAY(request_budget, struct event_budget, 1);

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

/* A request queued for the server. */
static __always_inline int request_sent(struct request_key *key, u32 opcode, u32 len, u64 unique)
{
    u32 connection = key->connection;
    if (!fuse_conns.lookup(&connection))
        return 0;
    count(CNT_REQ_SENT, 1);
    u64 id = bpf_get_current_pid_tgid();
    struct request_pending req = {};
    req.ts_ns = bpf_ktime_get_ns();
    req.unique = unique;
    req.opcode = opcode;
    req.len = len;
    req.pid = id;
    req.tgid = id >> 32;
    bpf_get_current_comm(&req.comm, sizeof(req.comm));
    if (requests_pending.update(key, &req)) {
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

/* A task of the server's: it read or answered a request of this connection. */
static __always_inline void server_thread_seen(u32 connection, u64 id, u64 replies)
{
    struct server_key skey = {};
    skey.connection = connection;
    skey.pid = id;
    struct server_thread *thread = server_threads.lookup(&skey);
    if (thread) {
        __sync_fetch_and_add(&thread->replies, replies);
    } else {
        struct server_thread fresh = {};
        fresh.replies = replies;
        fresh.tgid = id >> 32;
        bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
        server_threads.update(&skey, &fresh);
    }
}

/* A request answered (or aborted): joined with its send, streamed. unique and len as they are
 * at the end (0: take the send's). */
static __always_inline int request_ended(struct request_key *key, u64 unique, u32 len, s32 error)
{
    u32 connection = key->connection;
    if (!fuse_conns.lookup(&connection))
        return 0;
    count(CNT_REQ_ENDED, 1);
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    server_thread_seen(connection, id, 1);

    struct request_pending *req = requests_pending.lookup(key);
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
        if (error)
            __sync_fetch_and_add(&stats->errors, 1);
    }

    if (!request_in_budget(now, took)) {
        count(CNT_REQ_SUMMED, 1);
        requests_pending.delete(key);
        return 0;
    }
    struct request_event *e = events.ringbuf_reserve(sizeof(struct request_event));
    if (!e) {
        count_lost(LOST_REQUEST);
        requests_pending.delete(key);
        return 0;
    }
    e->kind = EV_REQUEST;
    e->connection = connection;
    e->unique = unique ? unique : (key->unique ? key->unique : req->unique);
    e->send_ts_ns = req->ts_ns;
    e->end_ts_ns = now;
    e->opcode = opcode;
    e->len = len ? len : req->len;
    e->error = error;
    e->pid = req->pid;
    e->tgid = req->tgid;
    e->end_pid = id;
    e->end_tgid = id >> 32;
    e->pad = 0;
    __builtin_memcpy(e->comm, req->comm, sizeof(e->comm));
    bpf_get_current_comm(&e->end_comm, sizeof(e->end_comm));
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    requests_pending.delete(key);
    return 0;
}

#if FUSE_REQ_PTR
/* The request's fields at offsets from the fuse module's BTF, keyed on the request pointer:
 * unique is read at the end (6.12-6.17 fire fuse_request_send before assigning it). */
static __always_inline u32 req_connection(void *req)
{
    void *fm = NULL, *fc = NULL;
    u32 dev = 0;
    bpf_probe_read_kernel(&fm, sizeof(fm), req + REQ_FM_OFF);
    if (!fm)
        return 0;
    bpf_probe_read_kernel(&fc, sizeof(fc), fm + FM_FC_OFF);
    if (!fc)
        return 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), fc + FC_DEV_OFF);
    return dev;
}

static __always_inline u32 req_u32(void *req, u64 off)
{
    u32 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), req + off);
    return v;
}

static __always_inline u64 req_unique(void *req)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), req + REQ_UNIQUE_OFF);
    return v;
}

#if FUSE_REQ_LEN_FROM_ARGS
/* The length fuse_len_args() gives: the header plus each input argument's size (offsets, sizes
 * and the array's length from BTF). */
static __always_inline u32 req_len_from_args(void *req)
{
    void *args = NULL;
    bpf_probe_read_kernel(&args, sizeof(args), req + REQ_ARGS_OFF);
    if (!args)
        return 0;
    u32 numargs = 0; /* little-endian: the low bytes of a u32 */
    bpf_probe_read_kernel(&numargs, ARGS_IN_NUMARGS_SIZE, args + ARGS_IN_NUMARGS_OFF);
    u32 len = REQ_IN_HEADER_SIZE;
#pragma unroll
    for (int i = 0; i < IN_ARGS_MAX; i++) {
        u32 size = 0;
        if (i < numargs)
            bpf_probe_read_kernel(&size, sizeof(size),
                                  args + ARGS_IN_ARGS_OFF + i * IN_ARG_STRIDE + IN_ARG_SIZE_OFF);
        len += size;
    }
    return len;
}
#endif

/* The length at the send: in.h.len where the kernel has assigned it already (6.18+), else
 * added up from the arguments as the kernel is about to. */
static __always_inline u32 req_len_at_send(void *req)
{
    u32 len = req_u32(req, REQ_LEN_OFF);
#if FUSE_REQ_LEN_FROM_ARGS
    if (!len)
        len = req_len_from_args(req);
#endif
    return len;
}

static __always_inline int req_sent_at(void *req)
{
    struct request_key key = {};
    key.connection = req_connection(req);
    key.req = (u64)req;
    return request_sent(&key, req_u32(req, REQ_OPCODE_OFF), req_len_at_send(req), req_unique(req));
}

static __always_inline int req_ended_at(void *req)
{
    struct request_key key = {};
    key.connection = req_connection(req);
    key.req = (u64)req;
    return request_ended(&key, req_unique(req), req_u32(req, REQ_LEN_OFF),
                         (s32)req_u32(req, REQ_ERROR_OFF));
}
#endif

#if FUSE_REQ_PTR == 1
/* Kernels without fuse:* tracepoints (before 6.12): kprobes.
 * queue_request_and_unlock(struct fuse_iqueue *fiq, struct fuse_req *req) */
int kp_queue_request_and_unlock(struct pt_regs *ctx) { return req_sent_at((void *)PT_REGS_PARM2(ctx)); }
/* fuse_request_end(struct fuse_req *req) */
int kp_fuse_request_end(struct pt_regs *ctx) { return req_ended_at((void *)PT_REGS_PARM1(ctx)); }
#elif FUSE_REQ_PTR == 2
/* 6.12+: the raw fuse:* tracepoints, whose first argument is the request. */
RAW_TRACEPOINT_PROBE(fuse_request_send) { return req_sent_at((void *)ctx->args[0]); }
RAW_TRACEPOINT_PROBE(fuse_request_end) { return req_ended_at((void *)ctx->args[0]); }
#endif

#if HAVE_FN_FUSE_DEV_DO_READ
/* fuse_dev_do_read(struct fuse_dev *fud, ...): a server thread reading requests. */
int kp_fuse_dev_do_read(struct pt_regs *ctx)
{
    void *fud = (void *)PT_REGS_PARM1(ctx);
    void *fc = NULL;
    u32 dev = 0;
    bpf_probe_read_kernel(&fc, sizeof(fc), fud + FUD_FC_OFF);
    if (!fc)
        return 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), fc + FC_DEV_OFF);
    if (!fuse_conns.lookup(&dev))
        return 0;
    server_thread_seen(dev, bpf_get_current_pid_tgid(), 0);
    return 0;
}
#endif

#if !FUSE_REQ_PTR
TRACEPOINT_PROBE(fuse, fuse_request_send)
{
    struct request_key key = {};
    key.connection = args->connection;
    key.unique = args->unique;
    return request_sent(&key, args->opcode, args->len, args->unique);
}

TRACEPOINT_PROBE(fuse, fuse_request_end)
{
    struct request_key key = {};
    key.connection = args->connection;
    key.unique = args->unique;
    return request_ended(&key, args->unique, 0, args->error);
}
#endif
