/* fusewb.h: the events fusewb's BPF programs send to user space, the in-kernel state they keep,
 * and the ids both sides share. The one place these layouts live: user space builds its ctypes
 * mirrors by parsing the structs below (fusewb/tracers/events.py), so keep each field on its
 * own line as "type name;" or "type name[N];" with types u8/u32/s32/u64/s64/char, N a number or
 * a #define of this file. A ring buffer event kind (EV_*, its struct) is also declared in
 * fusewb/contract/events.py; tests check each struct's layout against the compiler's.
 *
 * Compile-time options (cflags defines, chosen by fusewb/tracers/plan.py and program.py):
 *   WAIT_TP            1 folio_wait_writeback, 2 wait_on_page_writeback, 0 none
 *   WAIT_TIMING        1 pair with sched_switch, 2 kprobe/kretprobe, 0 untimed
 *   SCHED_SWITCH_RAW   1 raw tracepoint (TASK_PID_OFF, SCHED_SWITCH_STATE_ARG / TASK_STATE_OFF)
 *   WAIT_FN_START/END  address range of the wait function (0: no sleep-stack check)
 *   KPROBES, HAVE_FN_* kprobe plan and the functions present in kallsyms
 *   FUSE_WAIT_KPROBES  1: time the temp-page era's waits inside fuse.ko (fuse_set_nowrite,
 *                      fuse_wait_on_page_writeback, fuse_flush_times) with INODE_SB_OFF, INODE_INO_OFF,
 *                      SB_BDI_OFF, BDI_NAME_OFF, TASK_NVCSW_OFF from BTF
 *   FUSE_REQ_PTR       FUSE requests keyed on the request pointer, REQ_*_OFF from the fuse
 *                      module's BTF: 1 kprobes (queue_request_and_unlock, fuse_request_end),
 *                      2 raw tracepoints fuse_request_send/end; 0: the fuse:* tracepoints'
 *                      fields (FUSE_REQUESTS). HAVE_FN_FUSE_DEV_DO_READ: server readers
 *   FUSE_REQ_LEN_FROM_ARGS 1: a length not yet assigned at the send is added up from the
 *                      request's arguments (REQ_ARGS_OFF, ARGS_IN_*, IN_ARG_*, from BTF)
 *   FUSE_REQUESTS, FUSE_THROTTLE, VM_DIRECT_RECLAIM, VM_MEMCG_RECLAIM, VM_THROTTLED,
 *   VM_SHRINK_INACTIVE, VM_COMPACTION, VM_MIGRATE (1 single, 2 paired with _start)
 *   RING_PAGES         ring buffer size in pages (power of two)
 *   TPF_<EVENT>_<FIELD> the name a tracepoint field has on this kernel (tracefs format);
 *                      undefined when it has none: the code reading it is left out
 *   FILTER_TGID        only this process's waits and throttling (0: all)
 *   MAX_PENDING, MAX_INFLIGHT, STACK_ENTRIES, REQ_HIST_ENTRIES, WAIT_HIST_ENTRIES,
 *   FILTER_ENTRIES, SERVER_THREAD_ENTRIES, INFLIGHT_CONN_ENTRIES,
 *   REQ_SLOTS          map sizes (memory bound; REQ_SLOTS a power of two)
 *   ROW_REQ_NS, ROW_WAIT_NS  requests and waits this long or longer become rows (ring buffer
 *                      events); every ended one is filed in its histogram (0: all are rows)
 *   HIST_SUB_BITS, HIST_MAX_MSB, HIST_BUCKETS  the histograms' bucket layout (hist.h,
 *                      fusewb/contract/histogram.py)
 */
#ifndef FUSEWB_H
#define FUSEWB_H

#define BDI_NAME_LEN 32
#define COMM_LEN 16
#define SLEEP_STACK_DEPTH 12

/* Event kinds: the first u32 of every ring buffer record, and the index of its lost-event
 * counter (per-CPU array "lost", counted when the ring buffer cannot take one). */
#define EV_WAIT 1
#define EV_REQUEST 2
#define EV_THROTTLE 3
#define EV_VM 4
#define NR_EV_IDS 5 /* one past the last EV_* id: the size of "lost" */

/* In-kernel aggregates (per-CPU array "counters"). */
#define CNT_WAIT_TP_FUSE 0        /* wait tracepoint hits on FUSE bdis */
#define CNT_WAIT_TP_OTHER 1       /* wait tracepoint hits on other bdis (filtered out) */
#define CNT_WAIT_NO_SLEEP 2       /* FUSE wait tracepoint hits not followed by a sleep in it */
#define CNT_WAIT_EMITTED 3
#define CNT_REQ_SENT 4
#define CNT_REQ_ENDED 5
#define CNT_REQ_END_UNMATCHED 6   /* ended requests sent before tracing began */
#define CNT_SHRINK_CALLS 7        /* lru_shrink_inactive events summed, not streamed */
#define CNT_SHRINK_SCANNED 8
#define CNT_SHRINK_RECLAIMED 9
#define CNT_THROTTLE_OTHER 10     /* balance_dirty_pages on non-FUSE bdis */
#define CNT_PENDING_FULL 11       /* wait/request state map full: entry not tracked */
#define CNT_HIST_FULL 12          /* histogram map full: an ended request or wait not filed */
#define NR_COUNTERS 13

/* Wait timing source. */
#define SRC_SCHED_SWITCH 1
#define SRC_KRETPROBE 2

/* vm event kinds (schema VM_KINDS order). */
#define VM_DIRECT 1
#define VM_MEMCG 2
#define VM_SHRINK 3
#define VM_THROTTLE 4
#define VM_MIGRATE_PAGES 5
#define VM_COMPACT 6

/* kprobe-plan functions (plan.KPROBE_FUNCTIONS order). */
#define FN_FUSE_WRITEPAGE 0
#define FN_FUSE_WRITEPAGES 1
#define FN_FUSE_WRITEPAGE_END 2
#define FN_FUSE_IOMAP_WRITEBACK_RANGE 3
#define FN_SHRINK_FOLIO_LIST 4
#define FN_MIGRATE_PAGES 5
#define FN_WAIT_SB_INODES 6
#define NR_FNS 7

/* A task slept in the writeback wait on a FUSE bdi folio and ran again. */
struct wait_event {
    u32 kind;
    u32 pid;
    u32 tgid;
    s32 stack_id;
    u64 ts_ns;
    u64 duration_ns;
    u64 ino;
    u64 index;
    u32 source;
    u32 pad;
    char comm[COMM_LEN];
    char bdi[BDI_NAME_LEN];
};

/* A FUSE request, send joined with end in the kernel. */
struct request_event {
    u32 kind;
    u32 connection;
    u64 unique;
    u64 send_ts_ns;
    u64 end_ts_ns;
    u32 opcode;
    u32 len;
    s32 error;
    u32 pid;
    u32 tgid;
    u32 end_pid;
    u32 end_tgid;
    u32 pad;
    char comm[COMM_LEN];
    char end_comm[COMM_LEN];
};

/* writeback:balance_dirty_pages on a FUSE bdi. */
struct throttle_event {
    u32 kind;
    u32 pid;
    u32 tgid;
    u32 pad;
    u64 ts_ns;
    s64 pause_ms;
    s64 period_ms;
    s64 paused_ms;
    s64 think_ms;
    u64 dirty;
    u64 limit;
    u64 setpoint;
    u64 wb_dirty;
    u64 wb_setpoint;
    u64 dirty_ratelimit;
    u64 task_ratelimit;
    u64 dirtied;
    char comm[COMM_LEN];
    char bdi[BDI_NAME_LEN];
};

/* Reclaim, migration, compaction: paired begin/end (paired = 1) or single events. */
struct vm_event {
    u32 kind;
    u32 vm_kind;
    u32 pid;
    u32 tgid;
    u64 ts_ns;
    u64 duration_ns;
    u64 nr_scanned;
    u64 nr_reclaimed;
    u64 nr_dirty;
    u64 nr_writeback;
    u64 nr_immediate;
    u64 succeeded;
    u64 failed;
    s64 usec_delayed;
    s32 mode;
    s32 reason;
    s32 status;
    u32 paired;
    char comm[COMM_LEN];
};

/* In-kernel state: a wait seen at the tracepoint (or function entry), not yet finished.
 * User space reads the ones with asleep = 1 at stop as ongoing waits. nvcsw: the task's
 * voluntary context switches at entry of a fuse.ko wait (it slept when they changed). */
struct wait_pending {
    u64 ts_ns;
    u64 sleep_ts_ns;
    u64 nvcsw;
    u64 ino;
    u64 index;
    s32 stack_id;
    u32 tgid;
    u32 asleep;
    u32 pad;
    char comm[COMM_LEN];
    char bdi[BDI_NAME_LEN];
};

struct bdi_key {
    char name[BDI_NAME_LEN];
};

/* A request in flight: (connection, unique) from the fuse:* tracepoints, which do not expose
 * the request (6.18 assigns unique before fuse_request_send; 6.12-6.17 send it as 0, where only
 * the kprobes' key works); the request pointer from the kprobes (req, with unique 0). */
struct request_key {
    u32 connection;
    u32 pad;
    u64 unique;
    u64 req;
};

/* A FUSE request sent and not yet ended; read at stop as ongoing requests. task: the sender's
 * task_struct, whose comm is read only for a request that becomes a row (TASK_COMM_OFF; without
 * it comm is taken at every send). owner: what owns a
 * request_slots entry (the request pointer, or from the tracepoints' fields a mix of connection
 * and unique), 0 when the slot is free and in requests_pending. unique: as assigned when it was
 * queued (0 when not yet: 6.12-6.17). */
struct request_pending {
    u64 owner;
    u64 ts_ns;
    u64 unique;
    u32 connection;
    u32 opcode;
    u32 len;
    u32 pid;
    u32 tgid;
    u32 pad;
    u64 task;
    char comm[COMM_LEN];
};

/* Per CPU: the connection of the last request's fuse_mount, valid while the filter's generation
 * (filter_generation, bumped by user space at every filter refresh: each flush and each change
 * of the mount table) is
 * the one it was resolved under. Saves the fm -> fc -> dev reads and the filter lookup. */
struct conn_cache {
    u64 fm;
    u64 generation;
    u32 connection;
    u32 selected;
};

/* A FUSE server process, per connection: keyed on the process, not the thread (libfuse 2's
 * thread pool makes and ends threads all the time; a thread key would fill the map). */
struct server_key {
    u32 connection;
    u32 tgid;
};

/* Per CPU: the server process that answered this CPU's last request and its replies not yet
 * added to server_threads (user space adds them when it reads the servers). */
struct server_cache {
    u32 connection;
    u32 tgid;
    u64 replies;
};

/* A process that answered requests of a connection: the FUSE server. pid and comm: the first
 * of its threads seen. */
struct server_thread {
    u64 replies;
    u32 pid;
    u32 pad;
    char comm[COMM_LEN];
};

/* In-flight WRITE requests per connection: now and the highest seen. */
struct inflight_writes {
    s64 now;
    s64 max;
};

struct vm_key {
    u32 pid;
    u32 vm_kind;
};

struct vm_pending {
    u64 ts_ns;
    s32 mode;
    s32 reason;
};

/* In-kernel latency histograms (per-CPU hashes; buckets in hist.h): every ended request under
 * (connection, opcode, bucket), every ended wait under (bdi, kernel stack, bucket). A value
 * holds the exact count, sum and maximum of its bucket; errors and bytes for requests. */
struct req_hist_key {
    u32 connection;
    u32 opcode;
    u32 bucket;
};

struct wait_hist_key {
    char bdi[BDI_NAME_LEN];
    s32 stack_id;
    u32 bucket;
};

struct hist_value {
    u64 count;
    u64 total_ns;
    u64 max_ns;
    u64 errors;
    u64 bytes;
};

/* kprobe plan: per-function call count and latency. */
struct fn_key {
    u32 pid;
    u32 fn;
};

struct fn_stats {
    u64 count;
    u64 total_ns;
    u64 max_ns;
};

#endif /* FUSEWB_H */
