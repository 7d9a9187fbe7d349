"""The capture format: the contract between the tracer (writer) and the analysis (reader).

A capture is a directory, created owner-only (0700; files 0600), readable by pandas without
fusewb::

    CAPTURE/
      meta.json                     keys in contract/meta.py; rewritten atomically (tmp + rename)
      waits/part-000001.parquet     one row per wait on a folio under FUSE writeback (*)
      requests/part-000001.parquet  one row per FUSE request (send joined with end on unique) (*)
      throttle/part-000001.parquet  one row per balance_dirty_pages pause on a FUSE bdi
      vm/part-000001.parquet        reclaim, migration and compaction activity (not FUSE-filtered)
      stacks/part-000001.parquet    symbolized kernel stacks referenced by waits.stack_id

(*) From ``meta.json`` ``row_threshold_ms`` on (the threshold, 50 ms by default; ``fusewb trace
--all-requests`` makes every request a row), and every one still going on at the end. Every
ended request and wait, fast or slow, is counted in ``meta.json`` ``histograms`` (per connection
and opcode, per bdi and kernel stack): counts, sums, maxima and percentiles come from there.

Parts are numbered from 1, each written to a temporary name and renamed once complete, at least
once a second while events arrive, so after ``kill -9`` of the tracer every renamed part reads
back. ``pd.read_parquet(CAPTURE / "waits")`` reads all parts of a table.

Times are ``CLOCK_MONOTONIC`` nanoseconds (``bpf_ktime_get_ns``); ``meta.json`` gives
``start_monotonic_ns`` and ``start_epoch_ns`` to convert. Rows of a still-running wait or
request at the end of tracing have ``ongoing = True`` and the time waited so far as duration.

A column whose tracepoint field the traced kernel has under none of the names fusewb knows
(``fusewb.tracers.tpfields``) is *absent*: null in every row of that capture and listed in
``meta.json`` ``absent_columns`` (e.g. ``{"throttle": ["wb_dirty"]}``), so a reader tells "this
kernel does not say" from a measured zero. A field the kernel only calls by an older name
(``bdi_dirty`` on 6.1 for ``wb_dirty``) fills the column under its fusewb name.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pyarrow as pa

from fusewb.contract.events import VM_EVENT_KINDS

__all__ = ["SCHEMA_VERSION", "TABLES", "TableSpec", "TABLE_SPECS", "VM_KINDS", "FUSE_OPCODES",
           "PART_GLOB", "part_name"]

# 2: rows only for requests and waits from row_threshold_ms on, every one in meta.json's
# histograms; 1: rows for every wait and (within a per-CPU budget) every request.
SCHEMA_VERSION = 2

_task = [
    pa.field("pid", pa.int32()),  # thread id
    pa.field("tgid", pa.int32()),  # process id
    pa.field("comm", pa.string()),
]

TABLES: dict[str, pa.Schema] = {
    # A task slept in folio_wait_writeback on a folio of a FUSE bdi.
    "waits": pa.schema(
        [
            pa.field("ts_ns", pa.int64()),  # when the wait began (tracepoint / function entry)
            pa.field("duration_ns", pa.int64()),  # until the task ran again (or tracing stopped)
            pa.field("ongoing", pa.bool_()),  # still waiting when tracing stopped
            *_task,
            pa.field("bdi", pa.string()),  # "MAJOR:MINOR" as in /sys/class/bdi
            pa.field("ino", pa.int64()),
            pa.field("index", pa.int64()),  # folio index in the file (pages)
            pa.field("stack_id", pa.int64()),  # -> stacks.stack_id; -1 when none was captured
            pa.field("source", pa.string()),  # how it was timed: "sched_switch" or "kretprobe"
        ]
    ),
    # A FUSE request, send joined with end on (connection, unique) in the kernel.
    "requests": pa.schema(
        [
            pa.field("send_ts_ns", pa.int64()),
            pa.field("end_ts_ns", pa.int64()),  # null while ongoing
            pa.field("duration_ns", pa.int64()),  # end - send, or waited so far when ongoing
            pa.field("ongoing", pa.bool_()),
            pa.field("connection", pa.int64()),  # kernel dev_t, MAJOR<<20|MINOR
            pa.field("bdi", pa.string()),
            pa.field("unique", pa.int64()),
            pa.field("opcode", pa.int32()),
            pa.field("opcode_name", pa.string()),  # "WRITE", "FSYNC", ... (FUSE_OPCODES)
            pa.field("len", pa.int64()),  # request length in bytes (send)
            pa.field("error", pa.int32()),  # negative errno from the server, 0 ok, null ongoing
            pa.field("pid", pa.int32()),  # sender
            pa.field("tgid", pa.int32()),
            pa.field("comm", pa.string()),
            pa.field("end_pid", pa.int32()),  # the server thread that answered (null ongoing)
            pa.field("end_tgid", pa.int32()),
            pa.field("end_comm", pa.string()),
        ]
    ),
    # writeback:balance_dirty_pages on a FUSE bdi.
    "throttle": pa.schema(
        [
            pa.field("ts_ns", pa.int64()),
            *_task,
            pa.field("bdi", pa.string()),
            pa.field("pause_ms", pa.int64()),  # this pause
            pa.field("period_ms", pa.int64()),
            pa.field("paused_ms", pa.int64()),  # already paused in this loop
            pa.field("think_ms", pa.int64()),
            pa.field("dirty", pa.int64()),  # pages, global
            pa.field("limit", pa.int64()),
            pa.field("setpoint", pa.int64()),
            pa.field("wb_dirty", pa.int64()),  # pages, this bdi
            pa.field("wb_setpoint", pa.int64()),
            pa.field("dirty_ratelimit", pa.int64()),
            pa.field("task_ratelimit", pa.int64()),
            pa.field("dirtied", pa.int64()),
        ]
    ),
    # Memory-management activity during the capture (system-wide, not filtered to FUSE).
    "vm": pa.schema(
        [
            pa.field("ts_ns", pa.int64()),  # begin (paired kinds) or the event itself
            pa.field("duration_ns", pa.int64()),  # paired kinds; null for single events
            pa.field("kind", pa.string()),  # one of VM_KINDS
            *_task,
            pa.field("nr_scanned", pa.int64()),
            pa.field("nr_reclaimed", pa.int64()),
            pa.field("nr_dirty", pa.int64()),
            pa.field("nr_writeback", pa.int64()),  # folios found under writeback by reclaim
            pa.field("nr_immediate", pa.int64()),
            pa.field("succeeded", pa.int64()),  # migration
            pa.field("failed", pa.int64()),
            pa.field("mode", pa.int32()),  # enum migrate_mode / compaction sync flag
            pa.field("reason", pa.int32()),  # migrate_reason / vmscan throttle reason bits
            pa.field("status", pa.int32()),  # compaction status
            pa.field("usec_delayed", pa.int64()),  # vmscan throttled
        ]
    ),
    "stacks": pa.schema(
        [
            pa.field("stack_id", pa.int64()),
            pa.field("frames", pa.list_(pa.string())),  # innermost first, "function" names
        ]
    ),
}


@dataclass(frozen=True)
class TableSpec:
    """What the readers of a capture table must know besides its columns: one declaration per
    table in :data:`TABLE_SPECS`, from which the reader's checks
    (:data:`fusewb.analysis.capture.REQUIRED_COLUMNS`), the engines' split into big and small
    tables (:mod:`fusewb.analysis.scan`), synthetic captures (:mod:`fusewb.analysis.synthetic`)
    and the exports of :mod:`fusewb.analysis` follow."""

    required: tuple[str, ...]  # columns every row has (the tracer never leaves them null)
    big: bool  # rows by the million: read part by part by the streaming and Dask engines
    home: str  # the analysis module of its questions (fusewb.analysis.<home>)
    synthetic: MappingProxyType[str, Any]  # column values of synthetic rows when a test gives none


def _spec(required: tuple[str, ...], *, big: bool, home: str, **synthetic: Any) -> TableSpec:
    return TableSpec(required, big, home, MappingProxyType(synthetic))


TABLE_SPECS: dict[str, TableSpec] = {
    "waits": _spec(tuple(TABLES["waits"].names), big=True, home="waiting", ongoing=False,
                   bdi="0:52", stack_id=-1, source="sched_switch", index=0, ino=2, comm="writer",
                   pid=1000, tgid=1000, duration_ns=0),
    "requests": _spec(("send_ts_ns", "duration_ns"), big=True, home="requests", ongoing=False,
                      connection=52, bdi="0:52", opcode=16, len=4096, error=0,
                      comm="kworker/u4:1", pid=50, tgid=50),
    "throttle": _spec(("ts_ns",), big=False, home="vm", bdi="0:52", comm="writer", pid=1000,
                      tgid=1000, pause_ms=10),
    "vm": _spec(("ts_ns", "kind"), big=False, home="vm", comm="kswapd0", pid=80, tgid=80),
    "stacks": _spec(("stack_id",), big=False, home="waiting"),
}

# vm.kind values and the tracepoints (or pairs) behind them (contract/events.py declares them).
VM_KINDS: dict[str, str] = {kind.name: ", ".join(kind.tracepoints) for kind in VM_EVENT_KINDS}

# A table's parts: <table>/part-000001.parquet, numbered from 1.
PART_GLOB = "part-*.parquet"


def part_name(table: str, number: int) -> str:
    """The path of part ``number`` of ``table``, relative to the capture directory."""
    return f"{table}/part-{number:06d}.parquet"


# enum fuse_opcode (include/uapi/linux/fuse.h) -> short name.
FUSE_OPCODES: dict[int, str] = {
    1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 5: "READLINK", 6: "SYMLINK",
    8: "MKNOD", 9: "MKDIR", 10: "UNLINK", 11: "RMDIR", 12: "RENAME", 13: "LINK", 14: "OPEN",
    15: "READ", 16: "WRITE", 17: "STATFS", 18: "RELEASE", 20: "FSYNC", 21: "SETXATTR",
    22: "GETXATTR", 23: "LISTXATTR", 24: "REMOVEXATTR", 25: "FLUSH", 26: "INIT", 27: "OPENDIR",
    28: "READDIR", 29: "RELEASEDIR", 30: "FSYNCDIR", 31: "GETLK", 32: "SETLK", 33: "SETLKW",
    34: "ACCESS", 35: "CREATE", 36: "INTERRUPT", 37: "BMAP", 38: "DESTROY", 39: "IOCTL",
    40: "POLL", 41: "NOTIFY_REPLY", 42: "BATCH_FORGET", 43: "FALLOCATE", 44: "READDIRPLUS",
    45: "RENAME2", 46: "LSEEK", 47: "COPY_FILE_RANGE", 48: "SETUPMAPPING", 49: "REMOVEMAPPING",
    50: "SYNCFS", 51: "TMPFILE", 52: "STATX", 4096: "CUSE_INIT",
}
