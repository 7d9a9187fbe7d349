"""Kernel frames fusewb recognises by name, one place for each set: the tracing machinery on top
of a traced stack (dropped by the tracer), the frames every stack has (left out of summaries), the
wait machinery (skipped when naming a wait's caller), and what a sleeping task waits on
(``fusewb stuck``). Which frames put a wait on which kernel path is the analysis's table
(:data:`fusewb.analysis.paths.PATH_RULES`). Names in the sets are normalised as
:func:`fusewb.analysis.paths.normalize_frame` does (no leading underscores, offsets or suffixes);
the prefixes match raw frames.
"""

from __future__ import annotations

__all__ = [
    "TRACING_FRAME_PREFIXES", "STACK_NOISE_FRAMES", "WAIT_MACHINERY_PREFIXES",
    "REQUEST_FRAMES", "DEV_READ_FRAMES", "WRITEBACK_FRAMES", "PAGE_LOCK_FRAMES", "LOCK_FRAMES",
    "TEMP_PAGE_FRAMES"]

# Frames of the tracing machinery on top of a tracepoint's stack when several programs share the
# tracepoint (the static call goes through __traceiter_*): dropped so the traced function is first.
TRACING_FRAME_PREFIXES = ("__traceiter_", "__bpf_trace_", "bpf_trace_run", "perf_trace_",
                          "trace_event_raw_event_", "bpf_prog_")

# Frames of syscall entry, kernel threads, workqueues and page faults: every stack has some, so
# stack summaries leave them out (names after leading underscores are stripped).
STACK_NOISE_FRAMES = frozenset(
    "entry_SYSCALL_64_after_hwframe entry_SYSCALL_64 do_syscall_64 x64_sys_call ret_from_fork "
    "ret_from_fork_asm kthread worker_thread process_one_work asm_exc_page_fault exc_page_fault "
    "do_user_addr_fault handle_mm_fault __handle_mm_fault".split()
)

# Frames of the wait machinery itself, skipped when the live view names the caller of a wait.
WAIT_MACHINERY_PREFIXES = ("folio_wait", "wait_on_page", "__filemap_fdatawait", "filemap_fdatawait",
                           "file_write_and_wait", "filemap_write_and_wait", "__schedule", "schedule",
                           "io_schedule")

# What a stack waits on, checked in this order; names are normalised (analysis.paths).
REQUEST_FRAMES = frozenset("request_wait_answer fuse_get_req fuse_simple_request".split())
# a FUSE server thread waiting for the next request on /dev/fuse (fusewb stuck's verdict)
DEV_READ_FRAMES = frozenset("fuse_dev_do_read fuse_dev_read fuse_dev_splice_read".split())
WRITEBACK_FRAMES = frozenset(
    "folio_wait_writeback wait_on_page_writeback folio_wait_stable wait_for_stable_page "
    "filemap_fdatawait_range filemap_fdatawait_keep_errors filemap_fdatawait_range_keep_errors "
    "wait_sb_inodes wb_wait_for_completion inode_wait_for_writeback balance_dirty_pages "
    "reclaim_throttle fuse_wait_on_page_writeback fuse_wait_on_folio_writeback fuse_sync_writes".split())
PAGE_LOCK_FRAMES = frozenset(
    "folio_wait_bit_common folio_lock folio_lock_killable lock_page lock_page_killable "
    "wait_on_page_bit_common".split())
LOCK_FRAMES = frozenset(
    "rwsem_down_write_slowpath rwsem_down_read_slowpath mutex_lock_slowpath "
    "mutex_lock_common down_write down_read inode_lock".split())
# FUSE functions that wait on their own page waitqueue in the temp-page era (before 6.16)
TEMP_PAGE_FRAMES = frozenset(
    "fuse_fsync fuse_flush fuse_page_mkwrite fuse_write_begin fuse_launder_folio "
    "fuse_launder_page fuse_vma_close".split())
