"""Which kernel path a wait on FUSE writeback happened in, read from its kernel stack.

:data:`PATH_RULES` is the one table to extend: an ordered list of rules, each naming a path, the
functions whose presence in a stack puts a wait on that path, and one line on the kernel mechanism.
:func:`attribute_path` returns the path of the first rule (in table order) that matches any frame,
so the order is the priority when a stack holds several: migration (compaction, CMA, hot-unplug,
NUMA balancing) before reclaim (CMA reclaims clean pages through ``shrink_folio_list``), reclaim
before the flusher, whose kworker waits for an inode's SETATTR (a rule's ``unless`` frames
send its waits on folios, which are data-integrity writeback for sync(2), on to sync), sync
before fsync (``msync`` lands in ``fuse_fsync``), then close; write before
truncate (a direct write launders cached folios through ``invalidate_inode_pages2_range``); and
page_mkwrite last because its ``folio_wait_stable`` also sits under buffered writes.

Frames are normalised before matching: ``+0x1a/0x40`` offsets, ``[module]`` tags, compiler
suffixes (``.isra.0``, ``.constprop.0``, ``.part.0``, ``.cold``), the ``_noprof`` suffix of
allocation profiling, leading underscores and syscall wrappers (``__x64_sys_msync``,
``__do_sys_msync`` -> ``sys_msync``) are removed; ``[unknown]`` and raw addresses are dropped.
Stacks from kernels before 6.9 (``fuse_writepage`` and temp pages, ``wait_on_page_writeback``,
``shrink_page_list``, ``fuse_wait_on_page_writeback``, ``fuse_launder_page``) attribute through
the same table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fusewb.contract.frames import STACK_NOISE_FRAMES

__all__ = [
    "PathRule",
    "PATH_RULES",
    "PATHS",
    "PATH_MECHANISMS",
    "normalize_frame",
    "clean_frames",
    "attribute_path",
    "matching_frame",
    "stack_summary",
    "is_fuse_frame",
]


@dataclass(frozen=True)
class PathRule:
    """A path name, the (normalised) function names that identify it, and why it waits."""

    path: str
    frames: frozenset[str]
    mechanism: str
    unless: frozenset[str] = frozenset()  # a stack holding one of these is not on this path


def _rule(path: str, frames: str, mechanism: str, unless: str = "") -> PathRule:
    return PathRule(path, frozenset(frames.split()), mechanism, frozenset(unless.split()))


# Ordered: the first rule with a matching frame (and none of its ``unless``) wins. Names are
# normalised (see normalize_frame).
PATH_RULES: list[PathRule] = [
    _rule(
        "migration",
        "migrate_pages migrate_pages_batch migrate_pages_sync migrate_folio_unmap "
        "compact_zone compact_zone_order compact_node compact_nodes compact_zone_range "
        "try_to_compact_pages kcompactd kcompactd_do_work sysctl_compaction_handler "
        "alloc_contig_range alloc_contig_pages alloc_contig_migrate_range cma_alloc "
        "reclaim_clean_pages_from_list isolate_migratepages_range "
        "offline_pages do_migrate_range soft_offline_page soft_offline_in_use_page "
        "sys_move_pages kernel_move_pages do_pages_move move_pages_and_store_status "
        "sys_migrate_pages kernel_migrate_pages migrate_to_node do_migrate_pages "
        "migrate_misplaced_folio migrate_misplaced_page do_numa_page do_huge_pmd_numa_page "
        "task_numa_work sys_mbind do_mbind demote_folio_list demote_page_list",
        "migration in MIGRATE_SYNC mode waits for writeback to end; a FUSE server decides when "
        "that is, so compaction, CMA and memory hot-unplug stall behind it (still true after "
        "6.16)",
    ),
    _rule(
        "reclaim",
        "shrink_folio_list shrink_page_list shrink_inactive_list shrink_lruvec shrink_node "
        "shrink_node_memcgs shrink_zones do_try_to_free_pages try_to_free_pages "
        "try_to_free_mem_cgroup_pages mem_cgroup_shrink_node kswapd balance_pgdat "
        "kswapd_shrink_node node_reclaim reclaim_pages reclaim_folio_list evict_folios "
        "try_to_shrink_lruvec lru_gen_shrink_lruvec mem_cgroup_handle_over_high "
        "reclaim_high try_charge_memcg shrink_slab do_shrink_slab super_cache_scan prune_icache_sb",
        "reclaim waiting on a folio under FUSE writeback ties memory reclaim to a user-space "
        "server: a server that itself needs memory deadlocks, any other stalls (before 6.16; "
        "6.16+ skips such folios via the mapping flag)",
    ),
    _rule(
        "flusher",
        "wb_workfn wb_do_writeback wb_writeback writeback_sb_inodes writeback_inodes_wb",
        "the flusher (a kworker writing a bdi's dirty inodes back) sends each inode's times "
        "(fuse_write_inode's SETATTR) and waits for the answer, which a server busy with held "
        "WRITEs gives only after them; the bdi's other dirty inodes, and a close or fsync of "
        "this one, wait behind it",
        # a flusher waiting on a folio writes for sync(2)/syncfs(2) (data integrity): sync
        unless="folio_wait_writeback wait_on_page_writeback folio_wait_stable write_cache_pages "
        "writeback_iter",
    ),
    _rule(
        "sync",
        "sys_sync ksys_sync sync_inodes_sb sync_inodes_one_sb wait_sb_inodes sys_syncfs "
        "sync_filesystem sync_fs_one_sb fuse_sync_fs fuse_syncfs iterate_supers wb_workfn "
        "wb_writeback writeback_inodes_sb",
        "sync(2)/syncfs(2) wait for every folio under writeback on every filesystem, so one "
        "FUSE server that never answers hangs every sync on the host: an unprivileged DoS "
        "(kernels 6.16 up to the fix that skips the integrity wait for FUSE)",
    ),
    _rule(
        "fsync",
        "fuse_fsync fuse_fsync_common fuse_dir_fsync vfs_fsync_range vfs_fsync do_fsync "
        "sys_fsync sys_fdatasync sys_msync ksys_msync sys_sync_file_range ksys_sync_file_range "
        "sync_file_range",
        "fsync/msync/sync_file_range(WAIT) wait for the file's writeback, i.e. for the FUSE "
        "server to answer every WRITE of that range",
    ),
    _rule(
        "close",
        "fuse_flush filp_flush filp_close sys_close close_fd fuse_vma_close fuse_release "
        "fuse_file_release",
        "close (fuse_flush) and the last munmap (fuse_vma_close) write the inode back and "
        "wait, so close(2) and exit(2) take as long as the server's WRITEs",
    ),
    _rule(
        "write",
        "fuse_perform_write fuse_fill_write_pages fuse_write_begin fuse_cache_write_iter "
        "fuse_file_write_iter fuse_direct_write_iter fuse_direct_io generic_perform_write "
        "iomap_file_buffered_write iomap_write_begin vfs_write vfs_writev sys_write "
        "sys_pwrite64 sys_writev sys_pwritev sys_pwritev2 ksys_write ksys_pwrite64 "
        "fuse_copy_file_range sys_copy_file_range",
        "a buffered or direct write waits for earlier writeback of the same folio or range to "
        "finish (stable pages, or FUSE's own in-flight writeback check)",
    ),
    _rule(
        "truncate",
        "fuse_do_setattr fuse_setattr notify_change do_truncate vfs_truncate sys_truncate "
        "sys_ftruncate do_sys_ftruncate truncate_pagecache truncate_inode_pages_range "
        "truncate_inode_pages invalidate_inode_pages2_range invalidate_inode_pages2 "
        "fuse_launder_folio fuse_launder_page fuse_file_fallocate sys_fallocate vfs_fallocate "
        "fuse_open_common fuse_finish_open fuse_open",
        "truncate/setattr/fallocate and page-cache invalidation wait for writeback of the "
        "folios they drop (launder), so they wait on the server",
    ),
    _rule(
        "page_mkwrite",
        "fuse_page_mkwrite do_page_mkwrite wp_page_shared do_shared_fault folio_wait_stable "
        "filemap_page_mkwrite",
        "a store to a shared mapping whose folio is under writeback faults and waits "
        "(page_mkwrite / stable pages) until the server answers the WRITE",
    ),
]

OTHER = "other"
OTHER_MECHANISM = (
    "a wait on FUSE writeback from a path fusewb does not classify (or without a stack): "
    "the waiter still depends on the server answering"
)

# Every path name, in priority order, "other" last: stable, used by JSON reports and flags.
PATHS: list[str] = [rule.path for rule in PATH_RULES] + [OTHER]
PATH_MECHANISMS: dict[str, str] = {rule.path: rule.mechanism for rule in PATH_RULES}
PATH_MECHANISMS[OTHER] = OTHER_MECHANISM

_OFFSET = re.compile(r"\+0x[0-9a-fA-F]+(?:/0x[0-9a-fA-F]+)?")
_MODULE = re.compile(r"\s*\[[^\]]*\]\s*$")
_SUFFIX = re.compile(r"(?:\.(?:isra|constprop|part|cold|llvm|lto_priv)(?:\.\d+)*)+$")
_SYSCALL = re.compile(r"^(?:x64|ia32|x32|arm64|riscv|s390x?|se|do|compat|ia32_compat)_sys_")
_ADDRESS = re.compile(r"^(?:0x)?[0-9a-fA-F]{8,}$")


def _strip(frame: str) -> str:
    """A frame without offset, module tag and compiler suffixes, or "" for an unknown frame."""
    name = _MODULE.sub("", _OFFSET.sub("", str(frame))).strip()
    if not name or name.startswith("[") or _ADDRESS.match(name):
        return ""
    return _SUFFIX.sub("", name)


def normalize_frame(frame: str) -> str:
    """The key a frame is matched by: ``__x64_sys_msync+0x1a`` -> ``sys_msync``; "" if unknown."""
    name = _strip(frame).lstrip("_")
    if name.endswith("_noprof"):
        name = name[: -len("_noprof")]
    return _SYSCALL.sub("sys_", name)


def clean_frames(frames: Iterable[str] | None) -> list[str]:
    """Readable frames (offsets and suffixes removed, unknown frames dropped), innermost first."""
    if frames is None:
        return []
    return [name for name in (_strip(f) for f in frames) if name]


def matching_frame(frames: Iterable[str] | None) -> tuple[str, str | None]:
    """``(path, frame)``: the attributed path and the (readable) frame that decided it."""
    readable = clean_frames(frames)
    keys = [normalize_frame(f) for f in readable]
    for rule in PATH_RULES:
        if rule.unless and not rule.unless.isdisjoint(keys):
            continue
        for key, name in zip(keys, readable):
            if key in rule.frames:
                return rule.path, name
    return OTHER, None


def is_fuse_frame(frame: str) -> bool:
    """Whether a frame is FUSE's own code (``fuse_*``, ``request_wait_answer``): a stack holding
    one waits on a FUSE mount."""
    key = normalize_frame(frame)
    return key.startswith("fuse_") or key == "request_wait_answer"


def attribute_path(frames: Iterable[str] | None) -> str:
    """The path (one of :data:`PATHS`) of a wait with kernel stack ``frames``, innermost first."""
    return matching_frame(frames)[0]


def stack_summary(frames: Sequence[str] | None, width: int = 8) -> str:
    """A short ``inner < ... < outer`` line of a stack: the innermost frame, the first and last
    frames of the deciding rule with their callers, and the outermost frames."""
    readable = [f for f in clean_frames(frames)
                if f.lstrip("_") not in STACK_NOISE_FRAMES]
    if not readable:
        return "(no stack)"
    if len(readable) <= width:
        return " < ".join(readable)
    path = attribute_path(readable)
    rule = next((r for r in PATH_RULES if r.path == path), None)
    hits = [i for i, f in enumerate(readable) if rule and normalize_frame(f) in rule.frames]
    last = len(readable) - 1
    first_hit, last_hit = (hits[0], hits[-1]) if hits else (1, 1)
    wanted = [0, first_hit, last_hit, last, last_hit + 1, first_hit + 1, last - 1,
              last_hit + 2, 1, first_hit - 1, last - 2, last_hit - 1]
    keep: list[int] = []
    for i in wanted:
        if 0 <= i <= last and i not in keep and len(keep) < width:
            keep.append(i)
    out: list[str] = []
    previous = -1
    for i in sorted(keep):
        if previous >= 0 and i != previous + 1:
            out.append("...")
        out.append(readable[i])
        previous = i
    return " < ".join(out)
