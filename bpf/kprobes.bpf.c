/* kprobes.bpf.c: the kprobe plan. Entry and return of folio_wait_writeback time each wait
 * exactly (the tracepoint inside marks it as a FUSE wait, waits.bpf.c); the FUSE writeback,
 * reclaim and migration functions present in kallsyms (HAVE_FN_*) get per-function call counts
 * and latencies aggregated in fn_stats. Functions are attached by name from user space. */

BPF_HASH(fn_entry, struct fn_key, u64, MAX_PENDING);
BPF_ARRAY(fn_stats, struct fn_stats, NR_FNS);

#if WAIT_TP
int kp_folio_wait_writeback(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!tgid_selected(id >> 32))
        return 0;
    struct wait_pending w = {};
    w.ts_ns = bpf_ktime_get_ns();
    w.stack_id = -1;
    open_wait(id, &w);
    return 0;
}

int kr_folio_wait_writeback(struct pt_regs *ctx)
{
    u32 pid = bpf_get_current_pid_tgid();
    struct wait_pending *w = wait_pending.lookup(&pid);
    if (!w)
        return 0;
    if (w->asleep)
        end_wait(w, pid, bpf_ktime_get_ns(), SRC_KRETPROBE);
    close_wait(pid);
    return 0;
}
#endif

static __always_inline int fn_enter(u32 fn)
{
    struct fn_key key = {};
    key.pid = bpf_get_current_pid_tgid();
    key.fn = fn;
    u64 now = bpf_ktime_get_ns();
    fn_entry.update(&key, &now);
    return 0;
}

static __always_inline int fn_exit(u32 fn)
{
    struct fn_key key = {};
    key.pid = bpf_get_current_pid_tgid();
    key.fn = fn;
    u64 *start = fn_entry.lookup(&key);
    if (!start)
        return 0;
    u64 took = bpf_ktime_get_ns() - *start;
    fn_entry.delete(&key);
    struct fn_stats *stats = fn_stats.lookup(&fn);
    if (stats) {
        __sync_fetch_and_add(&stats->count, 1);
        __sync_fetch_and_add(&stats->total_ns, took);
        if (took > stats->max_ns)
            stats->max_ns = took;
    }
    return 0;
}

#define FN_PROBES(NAME, ID)                                                  \
    int kp_##NAME(struct pt_regs *ctx) { return fn_enter(ID); }              \
    int kr_##NAME(struct pt_regs *ctx) { return fn_exit(ID); }

#if HAVE_FN_FUSE_WRITEPAGE
FN_PROBES(fuse_writepage, FN_FUSE_WRITEPAGE)
#endif
#if HAVE_FN_FUSE_WRITEPAGES
FN_PROBES(fuse_writepages, FN_FUSE_WRITEPAGES)
#endif
#if HAVE_FN_FUSE_WRITEPAGE_END
FN_PROBES(fuse_writepage_end, FN_FUSE_WRITEPAGE_END)
#endif
#if HAVE_FN_FUSE_IOMAP_WRITEBACK_RANGE
FN_PROBES(fuse_iomap_writeback_range, FN_FUSE_IOMAP_WRITEBACK_RANGE)
#endif
#if HAVE_FN_SHRINK_FOLIO_LIST
FN_PROBES(shrink_folio_list, FN_SHRINK_FOLIO_LIST)
#endif
#if HAVE_FN_MIGRATE_PAGES
FN_PROBES(migrate_pages, FN_MIGRATE_PAGES)
#endif
#if HAVE_FN_WAIT_SB_INODES
FN_PROBES(wait_sb_inodes, FN_WAIT_SB_INODES)
#endif

#if FUSE_WAIT_KPROBES
/* Temp-page era (before 6.16): writeback of a FUSE page ends at once (the data is copied), so
 * folio_wait_writeback does not wait for the server; tasks wait inside fuse.ko on the inode's
 * page_waitq for its in-flight WRITEs: fuse_set_nowrite (all of the inode's: fsync, flush,
 * truncate) and fuse_wait_on_page_writeback (one page: page_mkwrite, write_begin, launder),
 * or for the answer to write_inode's SETATTR (fuse_flush_times), queued behind those WRITEs.
 * Entry opens the wait with its stack, inode and bdi; return emits it when the task slept in
 * between (its voluntary context switch count moved). */
static __always_inline u64 task_nvcsw(void)
{
    u64 n = 0;
    void *task = (void *)bpf_get_current_task();
    bpf_probe_read_kernel(&n, sizeof(n), task + TASK_NVCSW_OFF);
    return n;
}

static __always_inline int fuse_wait_enter(struct pt_regs *ctx, void *inode, u64 index)
{
    void *sb = NULL, *bdi = NULL;
    bpf_probe_read_kernel(&sb, sizeof(sb), inode + INODE_SB_OFF);
    if (!sb)
        return 0;
    bpf_probe_read_kernel(&bdi, sizeof(bdi), sb + SB_BDI_OFF);
    if (!bdi)
        return 0;
    const char *name = bdi + BDI_NAME_OFF;
    if (!is_fuse_bdi(name))
        return 0;
    count(CNT_WAIT_TP_FUSE, 1);
    u64 id = bpf_get_current_pid_tgid();
    if (!tgid_selected(id >> 32))
        return 0;
    struct wait_pending w = {};
    w.ts_ns = bpf_ktime_get_ns();
    w.sleep_ts_ns = w.ts_ns;
    w.nvcsw = task_nvcsw();
    bpf_probe_read_kernel(&w.ino, sizeof(w.ino), inode + INODE_INO_OFF);
    w.index = index;
    w.stack_id = stacks.get_stackid(ctx, 0);
    w.asleep = 1;
    bpf_probe_read_kernel(&w.bdi, sizeof(w.bdi), name);
    open_wait(id, &w);
    return 0;
}

static __always_inline int fuse_wait_return(void)
{
    u32 pid = bpf_get_current_pid_tgid();
    struct wait_pending *w = wait_pending.lookup(&pid);
    if (!w)
        return 0;
    if (task_nvcsw() != w->nvcsw)
        end_wait(w, pid, bpf_ktime_get_ns(), SRC_KRETPROBE);
    else
        count(CNT_WAIT_NO_SLEEP, 1);
    close_wait(pid);
    return 0;
}

#if HAVE_FN_FUSE_SET_NOWRITE
/* fuse_set_nowrite(struct inode *inode) */
int kp_fuse_set_nowrite(struct pt_regs *ctx) { return fuse_wait_enter(ctx, (void *)PT_REGS_PARM1(ctx), 0); }
int kr_fuse_set_nowrite(struct pt_regs *ctx) { return fuse_wait_return(); }
#endif
#if HAVE_FN_FUSE_WAIT_ON_PAGE_WRITEBACK
/* fuse_wait_on_page_writeback(struct inode *inode, pgoff_t index), or its .part.N clone
 * (the sleeping half, same arguments) */
int kp_fuse_wait_on_page_writeback(struct pt_regs *ctx)
{
    return fuse_wait_enter(ctx, (void *)PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx));
}
int kr_fuse_wait_on_page_writeback(struct pt_regs *ctx) { return fuse_wait_return(); }
#endif
#if HAVE_FN_FUSE_FLUSH_TIMES
/* fuse_flush_times(struct inode *inode, struct fuse_file *ff): write_inode sends the inode's
 * times (SETATTR) and waits for the answer, which a server busy with held WRITEs gives only
 * after them: close (fuse_flush -> write_inode_now) with temp pages, and the flusher. */
int kp_fuse_flush_times(struct pt_regs *ctx) { return fuse_wait_enter(ctx, (void *)PT_REGS_PARM1(ctx), 0); }
int kr_fuse_flush_times(struct pt_regs *ctx) { return fuse_wait_return(); }
#endif
#endif /* FUSE_WAIT_KPROBES */
