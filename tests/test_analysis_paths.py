"""Path attribution from kernel stacks: modern (6.18), older-kernel and unknown frames."""

from __future__ import annotations

import pytest

from fusewb.analysis.paths import (
    PATH_RULES,
    PATHS,
    attribute_path,
    clean_frames,
    normalize_frame,
    stack_summary,
)
from fusewb.analysis.synthetic import EXAMPLE_STACKS

# (expected path, stack innermost first), from older kernels and corner cases.
OLDER_AND_ODD: list[tuple[str, list[str]]] = [
    # 5.x direct reclaim, page era
    ("reclaim", ["wait_on_page_writeback+0x40/0x70", "shrink_page_list+0x9a1/0xc30",
                 "shrink_inactive_list+0x171/0x4c0", "shrink_node+0x2b1/0x6f0",
                 "do_try_to_free_pages+0xc9/0x3b0", "try_to_free_pages+0xe2/0x1c0",
                 "__alloc_pages_slowpath.constprop.0+0x3b3/0xd30"]),
    # kswapd
    ("reclaim", ["folio_wait_writeback", "shrink_folio_list", "shrink_inactive_list",
                 "shrink_lruvec", "shrink_node", "balance_pgdat", "kswapd", "kthread",
                 "ret_from_fork"]),
    # memcg reclaim under a buffered write: reclaim wins over write
    ("reclaim", ["folio_wait_writeback", "shrink_folio_list", "shrink_lruvec", "shrink_node",
                 "do_try_to_free_pages", "try_to_free_mem_cgroup_pages", "try_charge_memcg",
                 "__filemap_get_folio", "fuse_write_begin", "generic_perform_write",
                 "vfs_write"]),
    # fuse_writepage era: page_mkwrite waits in fuse_wait_on_page_writeback
    ("page_mkwrite", ["fuse_wait_on_page_writeback+0x60/0x90 [fuse]",
                      "fuse_page_mkwrite+0x4d/0x60 [fuse]", "do_page_mkwrite+0x55/0xd0",
                      "do_wp_page+0x1d0/0x3c0", "__handle_mm_fault+0x6b4/0x9d0"]),
    ("truncate", ["fuse_wait_on_page_writeback [fuse]", "fuse_launder_page [fuse]",
                  "invalidate_inode_pages2_range", "fuse_do_setattr [fuse]",
                  "fuse_setattr [fuse]", "notify_change", "do_truncate", "do_sys_ftruncate",
                  "__x64_sys_ftruncate", "do_syscall_64"]),
    ("truncate", ["folio_wait_writeback", "fuse_launder_folio", "invalidate_inode_pages2_range",
                  "fuse_open_common", "do_dentry_open"]),
    ("write", ["fuse_wait_on_page_writeback [fuse]", "fuse_fill_write_pages [fuse]",
               "fuse_perform_write [fuse]", "fuse_file_write_iter [fuse]", "new_sync_write",
               "vfs_write", "ksys_write"]),
    # a direct write launders cached folios first: the write decides, not the invalidation
    ("write", ["folio_wait_writeback", "fuse_launder_folio", "invalidate_inode_pages2_range",
               "kiocb_invalidate_pages", "fuse_direct_write_iter", "vfs_write", "ksys_write"]),
    # inode eviction from the slab shrinker inside reclaim
    ("reclaim", ["folio_wait_writeback", "truncate_inode_pages_range", "evict",
                 "prune_icache_sb", "super_cache_scan", "do_shrink_slab", "shrink_slab",
                 "shrink_node", "balance_pgdat", "kswapd"]),
    # 6.17+ buffered write through iomap
    ("write", ["folio_wait_writeback", "folio_wait_stable", "__filemap_get_folio",
               "iomap_write_begin", "iomap_file_buffered_write", "fuse_cache_write_iter",
               "vfs_write"]),
    ("fsync", ["wait_on_page_writeback", "__filemap_fdatawait_range",
               "filemap_write_and_wait_range", "fuse_fsync_common [fuse]", "fuse_fsync [fuse]",
               "vfs_fsync_range", "do_fsync", "__x64_sys_fsync"]),
    ("fsync", ["folio_wait_writeback", "__filemap_fdatawait_range", "file_write_and_wait_range",
               "ksys_sync_file_range", "__x64_sys_sync_file_range"]),
    ("close", ["wait_on_page_writeback", "__filemap_fdatawait_range",
               "filemap_write_and_wait_range", "fuse_flush [fuse]", "filp_close",
               "__x64_sys_close"]),
    # munmap at exit (seen on 6.18)
    ("close", ["folio_wait_writeback", "__filemap_fdatawait_range", "filemap_fdatawait_range",
               "__writeback_single_inode", "write_inode_now", "fuse_vma_close", "remove_vma",
               "exit_mmap", "mmput", "do_exit"]),
    ("sync", ["wait_on_page_writeback", "__filemap_fdatawait_range",
              "filemap_fdatawait_keep_errors", "wait_sb_inodes", "sync_inodes_sb",
              "sync_inodes_one_sb", "iterate_supers", "ksys_sync", "__ia32_sys_sync"]),
    ("sync", ["folio_wait_writeback", "__filemap_fdatawait_range",
              "filemap_fdatawait_keep_errors", "wait_sb_inodes", "sync_inodes_sb",
              "sync_filesystem", "__do_sys_syncfs"]),
    # temp pages (6.1): close behind a single-threaded server holding a WRITE waits for its
    # SETATTR of the inode's times
    ("close", ["request_wait_answer [fuse]", "fuse_simple_request [fuse]",
               "fuse_flush_times [fuse]", "fuse_write_inode [fuse]", "__writeback_single_inode",
               "writeback_single_inode", "write_inode_now", "fuse_flush [fuse]", "filp_close",
               "__x64_sys_close"]),
    # ... or the flusher took the inode first and waits for that SETATTR itself
    ("flusher", ["fuse_flush_times [fuse]", "fuse_write_inode [fuse]",
                 "__writeback_single_inode", "writeback_sb_inodes", "__writeback_inodes_wb",
                 "wb_writeback", "wb_workfn", "process_one_work", "worker_thread", "kthread"]),
    # the flusher writing for sync(2) (data integrity) waits on a folio under writeback
    ("sync", ["folio_wait_writeback", "write_cache_pages", "fuse_writepages [fuse]",
                 "do_writepages", "__writeback_single_inode", "writeback_sb_inodes",
                 "wb_writeback", "wb_do_writeback", "wb_workfn"]),
    # CMA reclaiming clean pages through shrink_folio_list: a CMA failure class, so migration
    ("migration", ["folio_wait_writeback", "shrink_folio_list", "reclaim_clean_pages_from_list",
                   "alloc_contig_range_noprof", "cma_alloc", "dma_alloc_contiguous"]),
    ("migration", ["folio_wait_writeback", "migrate_pages_batch", "migrate_pages",
                   "__alloc_contig_migrate_range", "alloc_contig_range_noprof", "cma_alloc"]),
    # memory hot-unplug
    ("migration", ["folio_wait_writeback", "migrate_pages_batch", "migrate_pages",
                   "do_migrate_range", "offline_pages", "memory_subsys_offline"]),
    # move_pages(2) and NUMA balancing
    ("migration", ["folio_wait_writeback", "migrate_pages", "do_pages_move",
                   "kernel_move_pages", "__x64_sys_move_pages"]),
    ("migration", ["folio_wait_writeback", "migrate_pages_batch", "migrate_pages",
                   "migrate_misplaced_folio", "do_numa_page", "__handle_mm_fault"]),
    # kcompactd and old direct compaction
    ("migration", ["folio_wait_writeback", "migrate_pages_batch", "migrate_pages",
                   "compact_zone", "kcompactd_do_work", "kcompactd", "kthread"]),
    ("migration", ["wait_on_page_writeback", "__unmap_and_move.isra.0", "unmap_and_move",
                   "migrate_pages", "compact_zone", "compact_zone_order",
                   "try_to_compact_pages", "__alloc_pages_direct_compact"]),
    # unknown frames only, empty stacks
    ("other", ["[unknown]", "0xffffffffc0001234", "mystery_fn+0x10/0x20 [mymod]"]),
    ("other", []),
]


@pytest.mark.parametrize("path", list(EXAMPLE_STACKS))
def test_modern_stacks(path: str) -> None:
    assert attribute_path(EXAMPLE_STACKS[path]) == path


@pytest.mark.parametrize(("expected", "frames"), OLDER_AND_ODD)
def test_older_kernel_and_odd_stacks(expected: str, frames: list[str]) -> None:
    assert attribute_path(frames) == expected


def test_every_path_is_covered_by_tests() -> None:
    covered = set(EXAMPLE_STACKS) | {expected for expected, _ in OLDER_AND_ODD}
    assert covered == set(PATHS)
    assert PATHS[-1] == "other" and len(PATHS) == len(set(PATHS)) == len(PATH_RULES) + 1


def test_unknown_frames_do_not_hide_known_ones() -> None:
    frames = ["[unknown]", "folio_wait_writeback", "[unknown]", "0xffffffff81000000",
              "fuse_fsync+0x85/0x160", "[unknown]"]
    assert attribute_path(frames) == "fsync"
    assert attribute_path(None) == "other"


@pytest.mark.parametrize(("frame", "key"), [
    ("__x64_sys_msync+0x1a/0x40", "sys_msync"),
    ("__do_sys_msync", "sys_msync"),
    ("__se_sys_sync", "sys_sync"),
    ("shrink_folio_list.isra.0", "shrink_folio_list"),
    ("fuse_page_mkwrite+0x4d/0x60 [fuse]", "fuse_page_mkwrite"),
    ("alloc_contig_range_noprof+0x10/0x200", "alloc_contig_range"),
    ("__compact_zone", "compact_zone"),
    ("[unknown]", ""),
    ("ffffffff81234567", ""),
])
def test_normalize_frame(frame: str, key: str) -> None:
    assert normalize_frame(frame) == key


def test_stack_summary_keeps_deciding_and_outer_frames() -> None:
    summary = stack_summary(EXAMPLE_STACKS["migration"])
    assert summary.startswith("folio_wait_writeback < migrate_pages_batch")
    assert "sysctl_compaction_handler" in summary and "..." in summary
    assert "entry_SYSCALL" not in summary and "+0x" not in summary
    assert stack_summary(["[unknown]"]) == "(no stack)"
    assert clean_frames(["a+0x1/0x2", "[unknown]", "b [mod]"]) == ["a", "b"]
