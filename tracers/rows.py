"""Turning the BPF side's records (ring buffer events, pending-state map entries) into rows of
the capture tables (:data:`fusewb.contract.schema.TABLES`).

A ring buffer event becomes a row of its kind's table (:data:`fusewb.contract.events.EVENT_KINDS`):
each column takes the struct field of the same name (``char`` arrays as text), then the kind's
derived columns, if it has any (:data:`_DERIVED`), fill or fix the rest.
"""

from __future__ import annotations

import ctypes
import operator
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from fusewb.contract.frames import TRACING_FRAME_PREFIXES
from fusewb.contract.events import VM_EVENT_KINDS, EventKind
from fusewb.contract.schema import FUSE_OPCODES, TABLES
from fusewb.tracers.events import cstr, header_defs

__all__ = ["drop_tracing_frames", "event_row", "pending_wait_row", "pending_request_row",
           "SOURCE_NAMES"]

BdiOf = Callable[[int], "str | None"]


def drop_tracing_frames(frames: list[str]) -> list[str]:
    """A kernel stack without the leading tracing-machinery frames: innermost is the traced
    function (``folio_wait_writeback``)."""
    start = 0
    while start < len(frames) - 1 and frames[start].startswith(TRACING_FRAME_PREFIXES):
        start += 1
    return frames[start:]


SOURCE_NAMES: dict[str, str] = {"SRC_SCHED_SWITCH": "sched_switch", "SRC_KRETPROBE": "kretprobe"}


@cache
def _vm_kinds() -> dict[int, str]:
    constants = header_defs().constants
    return {constants[kind.define]: kind.name for kind in VM_EVENT_KINDS}


@cache
def _sources() -> dict[int, str]:
    constants = header_defs().constants
    return {constants[define]: name for define, name in SOURCE_NAMES.items()}


def _wait(e: Any, row: dict[str, Any], _bdi_of: BdiOf) -> None:
    row["ongoing"] = False
    row["stack_id"] = e.stack_id if e.stack_id >= 0 else -1
    row["source"] = _sources().get(e.source, "unknown")


def _request(e: Any, row: dict[str, Any], bdi_of: BdiOf) -> None:
    row["duration_ns"] = e.end_ts_ns - e.send_ts_ns
    row["ongoing"] = False
    row["bdi"] = bdi_of(e.connection)
    row["opcode_name"] = FUSE_OPCODES.get(e.opcode, f"OP{e.opcode}")


def _vm(e: Any, row: dict[str, Any], _bdi_of: BdiOf) -> None:
    if not e.paired:
        row["duration_ns"] = None
    row["kind"] = _vm_kinds().get(e.vm_kind, f"vm{e.vm_kind}")


# table -> its columns that are not a struct field of the same name, or not as such.
_DERIVED: dict[str, Callable[[Any, dict[str, Any], BdiOf], None]] = {
    "waits": _wait, "requests": _request, "vm": _vm,
}


@cache
def _copier(kind: EventKind) -> tuple[list[str], Callable[[Any], tuple[Any, ...]], list[str]]:
    """(columns filled from same-named fields, a getter of those fields, the char-array ones)."""
    cls = header_defs().structs[kind.struct]
    fields = dict(cls._fields_)
    columns = [name for name in TABLES[kind.table].names if name in fields]
    text = [name for name in columns
            if issubclass(fields[name], ctypes.Array) and fields[name]._type_ is ctypes.c_char]
    getter = operator.attrgetter(*columns)
    return columns, (getter if len(columns) > 1 else lambda e: (getter(e),)), text


def event_row(kind: EventKind, e: Any, bdi_of: BdiOf) -> dict[str, Any]:
    """The row of ring buffer event ``e`` of ``kind``; ``bdi_of`` names the bdi of a FUSE
    connection."""
    columns, values, text = _copier(kind)
    row = dict(zip(columns, values(e)))
    for name in text:
        row[name] = cstr(row[name])
    derive = _DERIVED.get(kind.table)
    if derive is not None:
        derive(e, row, bdi_of)
    return row


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


def _comm_of(tgid: int, pid: int) -> str | None:
    """A live thread's comm from /proc (None once it is gone)."""
    try:
        return Path(f"/proc/{tgid}/task/{pid}/comm").read_text().rstrip("\n")
    except OSError:
        return None


def pending_request_row(r: Any, now_ns: int, bdi: str | None) -> dict[str, Any]:
    """A request not answered at stop: no end, duration is the time waited so far."""
    return {
        "send_ts_ns": r.ts_ns,
        "end_ts_ns": None,
        "duration_ns": max(0, now_ns - r.ts_ns),
        "ongoing": True,
        "connection": r.connection,
        "bdi": bdi,
        "unique": r.unique,
        "opcode": r.opcode,
        "opcode_name": FUSE_OPCODES.get(r.opcode, f"OP{r.opcode}"),
        "len": r.len,
        "error": None,
        "pid": r.pid,
        "tgid": r.tgid,
        "comm": cstr(r.comm) or _comm_of(r.tgid, r.pid),
        "end_pid": None,
        "end_tgid": None,
        "end_comm": None,
    }
