"""Every tracepoint fusewb may attach, declared once, in groups: the tracepoints a probe set
needs together, the define that compiles their programs in ``bpf/``, the capture table they feed,
the fields the programs read from each, and whether the plan may simply leave the group out.

From :data:`TRACEPOINT_GROUPS` follow the tracepoints the kernel check looks for
(:data:`fusewb.tracers.features.TRACEPOINTS`), the optional groups of the probe plan
(:mod:`fusewb.tracers.plan`) and the field names it resolves against tracefs
(:data:`fusewb.tracers.tpfields.TRACEPOINT_FIELDS`).

Fields: ``{"name|older_name": "table.column"}`` for a field that fills one capture column (a
kernel without any of its names costs that column), ``{"name": None}`` for a field read by its
one name that the programs cannot do without (a kernel lacking it costs the tracepoint). Names
newest first (``"wb_dirty|bdi_dirty"``: ``writeback:balance_dirty_pages`` says ``bdi_dirty`` on
6.1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["TracepointGroup", "TRACEPOINT_GROUPS", "ALL_TRACEPOINTS"]

Fields = Mapping[str, Mapping[str, "str | None"]]


@dataclass(frozen=True)
class TracepointGroup:
    """Tracepoints attached together (all or none)."""

    tracepoints: tuple[str, ...]  # "category:event"
    define: str  # the -D define that compiles their programs (bpf/fusewb.h lists them)
    table: str | None  # the capture table their events fill (None: they only time other events)
    fields: Fields  # tracepoint -> {"name|older": "table.column" or None (required)}
    optional: bool  # True: the plan attaches all of them with define=1 or skips them all;
    # False: the plan chooses among them itself (the wait tracepoint, its timing, migration)


def _group(tracepoints: tuple[str, ...], define: str, table: str | None, *, optional: bool,
           **fields: dict[str, str | None]) -> TracepointGroup:
    """A group; ``fields`` keyed by the event name (the part after ``category:``)."""
    by_event = {tp.split(":", 1)[1]: tp for tp in tracepoints}
    return TracepointGroup(tracepoints, define, table, MappingProxyType(
        {by_event[event]: MappingProxyType(names) for event, names in fields.items()}),
        optional)


_WAIT_FIELDS: dict[str, str | None] = {"name": None, "ino": None, "index": None}

TRACEPOINT_GROUPS: tuple[TracepointGroup, ...] = (
    # the wait on a folio under writeback (WAIT_TP=1), its pre-folio name before 5.16/5.17 (2)
    _group(("writeback:folio_wait_writeback",), "WAIT_TP", "waits", optional=False,
           folio_wait_writeback=_WAIT_FIELDS),
    _group(("writeback:wait_on_page_writeback",), "WAIT_TP", "waits", optional=False,
           wait_on_page_writeback=_WAIT_FIELDS),
    # times the waits (raw tracepoint with BTF offsets when it can: SCHED_SWITCH_RAW=1)
    _group(("sched:sched_switch",), "SCHED_SWITCH_RAW", None, optional=False,
           sched_switch={"prev_pid": None, "prev_state": None, "next_pid": None}),
    # FUSE requests (latency, opcode, errors, in-flight WRITEs, server threads)
    _group(("fuse:fuse_request_send", "fuse:fuse_request_end"), "FUSE_REQUESTS", "requests",
           optional=True,
           fuse_request_send={"connection": None, "unique": None, "opcode": None, "len": None},
           fuse_request_end={"connection": None, "unique": None, "error": None}),
    # dirty throttling pauses on FUSE bdis
    _group(("writeback:balance_dirty_pages",), "FUSE_THROTTLE", "throttle", optional=True,
           balance_dirty_pages={
               "bdi": None,
               "pause": "throttle.pause_ms",
               "period": "throttle.period_ms",
               "paused": "throttle.paused_ms",
               "think": "throttle.think_ms",
               "dirty": "throttle.dirty",
               "limit": "throttle.limit",
               "setpoint": "throttle.setpoint",
               "wb_dirty|bdi_dirty": "throttle.wb_dirty",  # bdi_dirty before the wb rename (6.1)
               "wb_setpoint|bdi_setpoint": "throttle.wb_setpoint",
               "dirty_ratelimit": "throttle.dirty_ratelimit",
               "task_ratelimit": "throttle.task_ratelimit",
               "dirtied": "throttle.dirtied",
           }),
    _group(("vmscan:mm_vmscan_direct_reclaim_begin", "vmscan:mm_vmscan_direct_reclaim_end"),
           "VM_DIRECT_RECLAIM", "vm", optional=True,
           mm_vmscan_direct_reclaim_end={"nr_reclaimed": None}),
    _group(("vmscan:mm_vmscan_memcg_reclaim_begin", "vmscan:mm_vmscan_memcg_reclaim_end"),
           "VM_MEMCG_RECLAIM", "vm", optional=True,
           mm_vmscan_memcg_reclaim_end={"nr_reclaimed": None}),
    _group(("vmscan:mm_vmscan_throttled",), "VM_THROTTLED", "vm", optional=True,
           mm_vmscan_throttled={"usec_delayed": None, "reason": None}),
    # reclaim scans (streamed when they meet dirty/writeback folios, else summed)
    _group(("vmscan:mm_vmscan_lru_shrink_inactive",), "VM_SHRINK_INACTIVE", "vm", optional=True,
           mm_vmscan_lru_shrink_inactive={
               "nr_scanned": None, "nr_reclaimed": None, "nr_dirty": None, "nr_writeback": None,
               "nr_immediate": None, "reclaim_flags": None}),
    # migrations, with their duration when the start tracepoint exists too (VM_MIGRATE=2, else 1)
    _group(("migrate:mm_migrate_pages_start", "migrate:mm_migrate_pages"), "VM_MIGRATE", "vm",
           optional=False, mm_migrate_pages_start={"mode": None, "reason": None},
           mm_migrate_pages={"succeeded": None, "failed": None, "mode": None, "reason": None}),
    _group(("compaction:mm_compaction_begin", "compaction:mm_compaction_end"), "VM_COMPACTION",
           "vm", optional=True, mm_compaction_begin={"sync": None},
           mm_compaction_end={"status": None}),
)

# Every tracepoint fusewb may use, in declaration order.
ALL_TRACEPOINTS: tuple[str, ...] = tuple(
    tp for group in TRACEPOINT_GROUPS for tp in group.tracepoints)
