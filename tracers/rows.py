"""Turning the BPF side's records (ring buffer events, pending-state map entries) into rows of
the capture tables (:data:`fusewb.contract.schema.TABLES`)."""

from __future__ import annotations

from functools import cache
from typing import Any

from fusewb.contract.defaults import TRACING_FRAME_PREFIXES
from fusewb.contract.schema import FUSE_OPCODES
from fusewb.tracers.events import cstr, header_defs

__all__ = ["clean_frames", "wait_row", "pending_wait_row", "request_row", "pending_request_row", "throttle_row",
           "vm_row", "VM_KIND_NAMES", "SOURCE_NAMES"]



def clean_frames(frames: list[str]) -> list[str]:
    """A kernel stack without the leading tracing-machinery frames: innermost is the traced
    function (``folio_wait_writeback``)."""
    start = 0
    while start < len(frames) - 1 and frames[start].startswith(TRACING_FRAME_PREFIXES):
        start += 1
    return frames[start:]


# vm_event.vm_kind (bpf/fusewb.h VM_*) -> schema VM_KINDS name.
VM_KIND_NAMES: dict[str, str] = {
    "VM_DIRECT": "direct_reclaim",
    "VM_MEMCG": "memcg_reclaim",
    "VM_SHRINK": "shrink_inactive",
    "VM_THROTTLE": "vmscan_throttled",
    "VM_MIGRATE_PAGES": "migrate_pages",
    "VM_COMPACT": "compaction",
}
SOURCE_NAMES: dict[str, str] = {"SRC_SCHED_SWITCH": "sched_switch", "SRC_KRETPROBE": "kretprobe"}


@cache
def _vm_kinds() -> dict[int, str]:
    constants = header_defs().constants
    return {constants[define]: name for define, name in VM_KIND_NAMES.items()}


@cache
def _sources() -> dict[int, str]:
    constants = header_defs().constants
    return {constants[define]: name for define, name in SOURCE_NAMES.items()}


def wait_row(e: Any) -> dict[str, Any]:
    return {
        "ts_ns": e.ts_ns,
        "duration_ns": e.duration_ns,
        "ongoing": False,
        "pid": e.pid,
        "tgid": e.tgid,
        "comm": cstr(e.comm),
        "bdi": cstr(e.bdi),
        "ino": e.ino,
        "index": e.index,
        "stack_id": e.stack_id if e.stack_id >= 0 else -1,
        "source": _sources().get(e.source, "unknown"),
    }


def pending_wait_row(pid: int, w: Any, now_ns: int, source: str) -> dict[str, Any]:
    """A wait still in progress at stop: duration is the time waited so far."""
    return {
        "ts_ns": w.ts_ns,
        "duration_ns": max(0, now_ns - w.ts_ns),
        "ongoing": True,
        "pid": pid,
        "tgid": w.tgid,
        "comm": cstr(w.comm),
        "bdi": cstr(w.bdi),
        "ino": w.ino,
        "index": w.index,
        "stack_id": w.stack_id if w.stack_id >= 0 else -1,
        "source": source,
    }


def request_row(e: Any, bdi: str | None) -> dict[str, Any]:
    return {
        "send_ts_ns": e.send_ts_ns,
        "end_ts_ns": e.end_ts_ns,
        "duration_ns": e.end_ts_ns - e.send_ts_ns,
        "ongoing": False,
        "connection": e.connection,
        "bdi": bdi,
        "unique": e.unique,
        "opcode": e.opcode,
        "opcode_name": FUSE_OPCODES.get(e.opcode, f"OP{e.opcode}"),
        "len": e.len,
        "error": e.error,
        "pid": e.pid,
        "tgid": e.tgid,
        "comm": cstr(e.comm),
        "end_pid": e.end_pid,
        "end_tgid": e.end_tgid,
        "end_comm": cstr(e.end_comm),
    }


def pending_request_row(key: Any, r: Any, now_ns: int, bdi: str | None) -> dict[str, Any]:
    """A request not answered at stop: no end, duration is the time waited so far."""
    return {
        "send_ts_ns": r.ts_ns,
        "end_ts_ns": None,
        "duration_ns": max(0, now_ns - r.ts_ns),
        "ongoing": True,
        "connection": key.connection,
        "bdi": bdi,
        "unique": key.unique or r.unique,
        "opcode": r.opcode,
        "opcode_name": FUSE_OPCODES.get(r.opcode, f"OP{r.opcode}"),
        "len": r.len,
        "error": None,
        "pid": r.pid,
        "tgid": r.tgid,
        "comm": cstr(r.comm),
        "end_pid": None,
        "end_tgid": None,
        "end_comm": None,
    }


def throttle_row(e: Any) -> dict[str, Any]:
    return {
        "ts_ns": e.ts_ns,
        "pid": e.pid,
        "tgid": e.tgid,
        "comm": cstr(e.comm),
        "bdi": cstr(e.bdi),
        "pause_ms": e.pause_ms,
        "period_ms": e.period_ms,
        "paused_ms": e.paused_ms,
        "think_ms": e.think_ms,
        "dirty": e.dirty,
        "limit": e.limit,
        "setpoint": e.setpoint,
        "wb_dirty": e.wb_dirty,
        "wb_setpoint": e.wb_setpoint,
        "dirty_ratelimit": e.dirty_ratelimit,
        "task_ratelimit": e.task_ratelimit,
        "dirtied": e.dirtied,
    }


def vm_row(e: Any) -> dict[str, Any]:
    return {
        "ts_ns": e.ts_ns,
        "duration_ns": e.duration_ns if e.paired else None,
        "kind": _vm_kinds().get(e.vm_kind, f"vm{e.vm_kind}"),
        "pid": e.pid,
        "tgid": e.tgid,
        "comm": cstr(e.comm),
        "nr_scanned": e.nr_scanned,
        "nr_reclaimed": e.nr_reclaimed,
        "nr_dirty": e.nr_dirty,
        "nr_writeback": e.nr_writeback,
        "nr_immediate": e.nr_immediate,
        "succeeded": e.succeeded,
        "failed": e.failed,
        "mode": e.mode,
        "reason": e.reason,
        "status": e.status,
        "usec_delayed": e.usec_delayed,
    }
