/* requests.bpf.c: FUSE requests on the selected connections, send joined with end in the
 * kernel on the request pointer (FUSE_REQ_PTR: 1 kprobes before 6.12, 2 the raw fuse:*
 * tracepoints), else on (connection, unique) from the fuse:* tracepoints' fields, which do not
 * expose the request; the tasks that read or end requests are recorded as the server's threads.
 * Every ended request is filed in request_hist; only those of ROW_REQ_NS or more are streamed. */
#include <uapi/linux/fuse.h>

/* Requests in flight: in the slot of request_slots their owner (the request pointer) hashes to,
 * claimed by compare-and-swap (an array slot costs a fraction of a hash update); in
 * requests_pending when that slot is taken. */
BPF_ARRAY(request_slots, struct request_pending, REQ_SLOTS);
BPF_HASH(requests_pending, struct request_key, struct request_pending, MAX_INFLIGHT);
BPF_HASH(server_threads, struct server_key, struct server_thread, SERVER_THREAD_ENTRIES);
BPF_HASH(writes_inflight, u32, struct inflight_writes, INFLIGHT_CONN_ENTRIES);
BPF_PERCPU_HASH(request_hist, struct req_hist_key, struct hist_value, REQ_HIST_ENTRIES);
BPF_PERCPU_ARRAY(server_cache, struct server_cache, 1);

static __always_inline u32 request_slot(u64 owner)
{
    return ((owner >> 4) * 0x9E3779B97F4A7C15ULL >> 40) & (REQ_SLOTS - 1); /* Fibonacci hash */
}

static __always_inline void request_fill(struct request_pending *req, u64 id, u32 connection,
                                         u32 opcode, u32 len, u64 unique)
{
    req->ts_ns = bpf_ktime_get_ns();
    req->unique = unique;
    req->connection = connection;
    req->opcode = opcode;
    req->len = len;
    req->pid = id;
    req->tgid = id >> 32;
#ifdef TASK_COMM_OFF
    req->task = (u64)bpf_get_current_task();
#else
    bpf_get_current_comm(&req->comm, sizeof(req->comm));
#endif
}

/* The sender's comm for a row: from its task while that task still has the sender's pid (else
 * empty: it exited); taken at the send where task_struct's offsets are not known. */
static __always_inline void sender_comm(struct request_pending *req, char *comm)
{
#ifdef TASK_COMM_OFF
    void *task = (void *)req->task;
    u32 pid = 0;
    bpf_probe_read_kernel(&pid, sizeof(pid), task + TASK_PID_OFF);
    if (task && pid == req->pid)
        bpf_probe_read_kernel(comm, COMM_LEN, task + TASK_COMM_OFF);
    else
        comm[0] = 0;
#else
    __builtin_memcpy(comm, req->comm, COMM_LEN);
#endif
}

/* A request queued for the server (connection already known to be selected). */
static __always_inline int request_sent(struct request_key *key, u64 owner, u32 connection,
                                        u32 opcode, u32 len, u64 unique)
{
    count(CNT_REQ_SENT, 1);
    u64 id = bpf_get_current_pid_tgid();
    u32 index = request_slot(owner);
    struct request_pending *slot = request_slots.lookup(&index);
    if (slot) {
        /* free, or still ours from a send whose end never came (the request was reused) */
        u64 was = __sync_val_compare_and_swap(&slot->owner, 0, owner);
        if (was != 0 && was != owner)
            slot = NULL;
    }
    if (slot) {
        request_fill(slot, id, connection, opcode, len, unique);
    } else {
        struct request_pending req = {};
        request_fill(&req, id, connection, opcode, len, unique);
        if (requests_pending.update(key, &req)) {
            count(CNT_PENDING_FULL, 1);
            return 0;
        }
    }
    if (opcode == FUSE_WRITE) {
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

/* The send of the request ending now: its slot (owner matches) or its entry in
 * requests_pending; NULL when it was sent before tracing began (or not tracked). */
static __always_inline struct request_pending *request_find(struct request_key *key, u64 owner)
{
    u32 index = request_slot(owner);
    struct request_pending *slot = request_slots.lookup(&index);
    if (slot && slot->owner == owner)
        return slot;
    return requests_pending.lookup(key);
}

/* Forget the send found by request_find (after everything of it was read). */
static __always_inline void request_forget(struct request_key *key, struct request_pending *req)
{
    if (req->owner)
        req->owner = 0; /* ours until this store: no other CPU's compare-and-swap succeeds */
    else
        requests_pending.delete(key);
}

/* A task of the server's: it read or answered a request of this connection (its process is
 * recorded, with this thread as its first). */
static __always_inline void server_thread_seen(u32 connection, u64 id, u64 replies)
{
    struct server_key skey = {};
    skey.connection = connection;
    skey.tgid = id >> 32;
    struct server_thread *thread = server_threads.lookup(&skey);
    if (thread) {
        __sync_fetch_and_add(&thread->replies, replies);
    } else {
        struct server_thread fresh = {};
        fresh.replies = replies;
        fresh.pid = id;
        bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
        server_threads.update(&skey, &fresh);
    }
}

/* A reply from task ``id``: counted in this CPU's server_cache while the same process answers
 * the same connection (no hash lookup); a new process's entry is made at once, with its comm. */
static __always_inline void server_reply(u32 connection, u64 id)
{
    u32 zero = 0;
    struct server_cache *c = server_cache.lookup(&zero);
    if (!c) {
        server_thread_seen(connection, id, 1);
        return;
    }
    if (c->tgid == (u32)(id >> 32) && c->connection == connection) {
        c->replies += 1;
        return;
    }
    if (c->replies) {
        struct server_key old = {};
        old.connection = c->connection;
        old.tgid = c->tgid;
        struct server_thread *thread = server_threads.lookup(&old);
        if (thread)
            __sync_fetch_and_add(&thread->replies, c->replies);
    }
    server_thread_seen(connection, id, 1);
    c->connection = connection;
    c->tgid = id >> 32;
    c->replies = 0;
}

/* An end whose send was not seen: counted, and its task noted as a server thread, if its
 * connection is traced. */
static __always_inline void request_end_unmatched(u32 connection)
{
    if (fuse_conns.lookup(&connection)) {
        count(CNT_REQ_ENDED, 1);
        count(CNT_REQ_END_UNMATCHED, 1);
        server_thread_seen(connection, bpf_get_current_pid_tgid(), 1);
    }
}

/* A request answered (or aborted), found by its send's key: filed in its histogram, and
 * streamed as a row from ROW_REQ_NS on (with the fields the caller reads only then). Returns the
 * pending entry's row event, reserved, or NULL: the caller fills unique and len, then submits. */
static __always_inline struct request_event *request_ended(struct request_key *key,
                                                           struct request_pending *req,
                                                           s32 error)
{
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    u32 connection = req->connection;
    u32 opcode = req->opcode;
    u64 took = now - req->ts_ns;
    count(CNT_REQ_ENDED, 1);
    server_reply(connection, id);
    if (opcode == FUSE_WRITE) {
        struct inflight_writes *w = writes_inflight.lookup(&connection);
        if (w)
            __sync_fetch_and_add(&w->now, -1);
    }
    struct req_hist_key hk = {};
    hk.connection = connection;
    hk.opcode = opcode;
    hk.bucket = hist_bucket(took);
    struct hist_value zero = {};
    hist_file(request_hist.lookup_or_try_init(&hk, &zero), took, error, req->len);
    if (took < ROW_REQ_NS)
        return NULL;
    struct request_event *e = events.ringbuf_reserve(sizeof(struct request_event));
    if (!e) {
        count_lost(EV_REQUEST);
        return NULL;
    }
    e->kind = EV_REQUEST;
    e->connection = connection;
    e->unique = req->unique;
    e->send_ts_ns = req->ts_ns;
    e->end_ts_ns = now;
    e->opcode = opcode;
    e->len = req->len;
    e->error = error;
    e->pid = req->pid;
    e->tgid = req->tgid;
    e->end_pid = id;
    e->end_tgid = id >> 32;
    e->pad = 0;
    sender_comm(req, e->comm);
    bpf_get_current_comm(&e->end_comm, sizeof(e->end_comm));
    return e;
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

BPF_PERCPU_ARRAY(conn_cache, struct conn_cache, 1);

/* Whether the request is of a traced connection (its dev_t in *connection): one read of req->fm
 * while it is the same fuse_mount as this CPU's last request under the same filter. */
static __always_inline int req_selected(void *req, u32 *connection)
{
    void *fm = NULL;
    bpf_probe_read_kernel(&fm, sizeof(fm), req + REQ_FM_OFF);
    u32 zero = 0;
    u64 *generation = filter_generation.lookup(&zero);
    struct conn_cache *c = conn_cache.lookup(&zero);
    if (!fm || !generation || !c)
        return 0;
    if (c->fm != (u64)fm || c->generation != *generation) {
        void *fc = NULL;
        u32 dev = 0;
        bpf_probe_read_kernel(&fc, sizeof(fc), fm + FM_FC_OFF);
        if (fc)
            bpf_probe_read_kernel(&dev, sizeof(dev), fc + FC_DEV_OFF);
        c->fm = (u64)fm;
        c->generation = *generation;
        c->connection = dev;
        c->selected = dev && fuse_conns.lookup(&dev) != NULL;
    }
    *connection = c->connection;
    return c->selected;
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

/* len, opcode and unique of the request's in.h: one read where BTF puts them side by side. */
struct req_in_header {
    u32 len;
    u32 opcode;
    u64 unique;
};

static __always_inline void req_in_header(void *req, struct req_in_header *h)
{
#if REQ_OPCODE_OFF == REQ_LEN_OFF + 4 && REQ_UNIQUE_OFF == REQ_LEN_OFF + 8
    bpf_probe_read_kernel(h, sizeof(*h), req + REQ_LEN_OFF);
#else
    h->len = req_u32(req, REQ_LEN_OFF);
    h->opcode = req_u32(req, REQ_OPCODE_OFF);
    h->unique = req_unique(req);
#endif
}

static __always_inline int req_sent_at(void *req)
{
    u32 connection = 0;
    if (!req_selected(req, &connection))
        return 0;
    struct req_in_header h = {};
    req_in_header(req, &h);
#if FUSE_REQ_LEN_FROM_ARGS
    if (!h.len)
        h.len = req_len_from_args(req);
#endif
    struct request_key key = {};
    key.req = (u64)req;
    return request_sent(&key, (u64)req, connection, h.opcode, h.len, h.unique);
}

/* Keyed on the request pointer: an end of a request not sent while tracing reads the
 * connection only to tell whether it was one of ours. */
static __always_inline int req_ended_at(void *req)
{
    struct request_key key = {};
    key.req = (u64)req;
    struct request_pending *pending = request_find(&key, (u64)req);
    if (!pending) {
        request_end_unmatched(req_connection(req));
        return 0;
    }
    struct request_event *e = request_ended(&key, pending, (s32)req_u32(req, REQ_ERROR_OFF));
    if (e) {
        struct req_in_header h = {};
        req_in_header(req, &h);
        if (h.unique)
            e->unique = h.unique;
        if (h.len)
            e->len = h.len;
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    }
    request_forget(&key, pending);
    return 0;
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
/* A slot owner from the tracepoints' fields: never 0, and unlike a kernel pointer. */
static __always_inline u64 field_owner(u32 connection, u64 unique)
{
    return (unique << 20 ^ connection) | 1;
}

TRACEPOINT_PROBE(fuse, fuse_request_send)
{
    u32 connection = args->connection;
    if (!fuse_conns.lookup(&connection))
        return 0;
    struct request_key key = {};
    key.connection = connection;
    key.unique = args->unique;
    return request_sent(&key, field_owner(connection, args->unique), connection, args->opcode,
                        args->len, args->unique);
}

TRACEPOINT_PROBE(fuse, fuse_request_end)
{
    u32 connection = args->connection;
    struct request_key key = {};
    key.connection = connection;
    key.unique = args->unique;
    struct request_pending *pending = request_find(&key, field_owner(connection, args->unique));
    if (!pending) {
        request_end_unmatched(connection);
        return 0;
    }
    struct request_event *e = request_ended(&key, pending, args->error);
    if (e)
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    request_forget(&key, pending);
    return 0;
}
#endif
