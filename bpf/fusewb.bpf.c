/* fusewb.bpf.c: the one compilation unit. Maps and helpers shared by every probe set, then the
 * probe sets the plan's defines select. Compiled by bcc (fusewb/tracers/program.py). */
#include <linux/types.h>
#include <uapi/linux/ptrace.h>
#include "fusewb.h"
#include "hist.h"

/* Sizes and options come from fusewb.tracers.program.BuildOptions (defaults in
 * contract/defaults.py) as -D defines; this file has no defaults of its own. */
#if !defined(RING_PAGES) || !defined(MAX_PENDING) || !defined(MAX_INFLIGHT) || \
    !defined(STACK_ENTRIES) || !defined(FILTER_TGID) || !defined(ROW_REQ_NS) || \
    !defined(ROW_WAIT_NS) || !defined(REQ_HIST_ENTRIES) || !defined(WAIT_HIST_ENTRIES) || \
    !defined(HIST_BUCKETS) || !defined(REQ_SLOTS) || !defined(WAIT_FN_START) || !defined(WAIT_FN_END) || \
    !defined(FILTER_ENTRIES) || !defined(SERVER_THREAD_ENTRIES) || !defined(INFLIGHT_CONN_ENTRIES)
#error "compile through fusewb.tracers.program: it defines the sizes and options"
#endif

BPF_RINGBUF_OUTPUT(events, RING_PAGES);
BPF_PERCPU_ARRAY(lost, u64, NR_EV_IDS);
BPF_PERCPU_ARRAY(counters, u64, NR_COUNTERS);
BPF_STACK_TRACE(stacks, STACK_ENTRIES);

/* The FUSE filter, filled and refreshed by user space: bdi names and connections. */
BPF_HASH(fuse_bdis, struct bdi_key, u8, FILTER_ENTRIES);
BPF_HASH(fuse_conns, u32, u8, FILTER_ENTRIES);
BPF_ARRAY(filter_generation, u64, 1);

static __always_inline void count(u32 which, u64 by)
{
    u64 *slot = counters.lookup(&which);
    if (slot)
        *slot += by;
}

static __always_inline void count_lost(u32 kind)
{
    u64 *slot = lost.lookup(&kind);
    if (slot)
        *slot += 1;
}

/* File one ended request or wait of ``took`` ns in its histogram entry (the caller's
 * lookup_or_try_init of its key, bucket included; NULL: the map is full). Per-CPU: plain adds. */
static __always_inline void hist_file(struct hist_value *hv, u64 took, s32 error, u64 nbytes)
{
    if (!hv) {
        count(CNT_HIST_FULL, 1);
        return;
    }
    hv->count += 1;
    hv->total_ns += took;
    if (took > hv->max_ns)
        hv->max_ns = took;
    hv->errors += error != 0;
    hv->bytes += nbytes;
}

static __always_inline int tgid_selected(u32 tgid)
{
    return FILTER_TGID == 0 || tgid == FILTER_TGID;
}

static __always_inline int is_fuse_bdi(const char *name)
{
    struct bdi_key key = {};
    bpf_probe_read_kernel(&key.name, sizeof(key.name), name);
    return fuse_bdis.lookup(&key) != NULL;
}

#if WAIT_TP || FUSE_WAIT_KPROBES
#include "waits.bpf.c"
#endif
#if FUSE_REQUESTS || FUSE_REQ_PTR
#include "requests.bpf.c"
#endif
#if FUSE_THROTTLE
#include "throttle.bpf.c"
#endif
#include "vm.bpf.c"
#if KPROBES
#include "kprobes.bpf.c"
#endif
