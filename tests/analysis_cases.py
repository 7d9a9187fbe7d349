"""Small hand-made captures for the analysis tests: every flag, with known answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusewb.analysis.synthetic import EXAMPLE_STACKS, START_NS, make_meta, write_capture
from fusewb.contract.schema import SCHEMA_VERSION

__all__ = ["MS", "STACK_IDS", "SERVER_TGID", "everything_capture", "clean_capture", "at",
           "stacks_table"]

MS = 1_000_000
STACK_IDS = {path: number for number, path in enumerate(EXAMPLE_STACKS, 1)}
SERVER_TGID = 3000


def at(ms: float) -> int:
    """Monotonic ns ``ms`` after the synthetic capture start."""
    return START_NS + int(ms * MS)


def stacks_table() -> dict[str, Any]:
    """The stacks table of :data:`STACK_IDS` (one example stack per path)."""
    return {"stack_id": list(STACK_IDS.values()), "frames": list(EXAMPLE_STACKS.values())}


def _wait(ms_at: float, duration_ms: float, path: str, pid: int = 100, comm: str = "writer",
          ino: int = 10, ongoing: bool = False, tgid: int | None = None,
          bdi: str = "0:52") -> dict[str, Any]:
    return {"ts_ns": at(ms_at), "duration_ns": int(duration_ms * MS), "ongoing": ongoing,
            "pid": pid, "tgid": tgid or pid, "comm": comm, "bdi": bdi, "ino": ino, "index": 0,
            "stack_id": STACK_IDS[path], "source": "sched_switch"}


def _request(ms_at: float, duration_ms: float, opcode: int = 16, ongoing: bool = False,
             unique: int = 1, end_pid: int = SERVER_TGID + 1) -> dict[str, Any]:
    return {"send_ts_ns": at(ms_at), "end_ts_ns": None if ongoing else at(ms_at + duration_ms),
            "duration_ns": int(duration_ms * MS), "ongoing": ongoing, "connection": 52,
            "bdi": "0:52", "unique": unique, "opcode": opcode, "len": 65536,
            "error": None if ongoing else 0, "pid": 40, "tgid": 40, "comm": "kworker/u4:2",
            "end_pid": None if ongoing else end_pid,
            "end_tgid": None if ongoing else SERVER_TGID,
            "end_comm": None if ongoing else "fusewb-server"}


def everything_capture(folder: Path, version: int = SCHEMA_VERSION, **meta: Any) -> Path:
    """A capture raising every flag once, with known figures (see the test that reads it), of
    capture schema ``version`` (1: before the in-kernel histograms)."""
    waits = [
        _wait(100, 120, "fsync", ino=11),                      # BLOCKED_WAIT
        _wait(300, 10, "fsync", ino=11),                       # nothing
        _wait(400, 5, "reclaim", pid=101, comm="reader"),     # RECLAIM_WAIT
        _wait(500, 3000, "migration", pid=102, comm="kcompactd0", ino=12, ongoing=True),
        _wait(600, 20, "sync", pid=103, comm="sync"),          # SYNC_WAIT
        _wait(700, 80, "close", pid=SERVER_TGID + 1, tgid=SERVER_TGID, comm="fusewb-server",
              ino=13),                                         # SERVER_SELF_WAIT + BLOCKED
    ]
    requests = [
        _request(50, 1, unique=2),
        _request(200, 200, unique=4),                          # slow WRITE
        _request(1000, 9000, ongoing=True, unique=6),          # never answered
        _request(1200, 300, opcode=3, unique=8),               # slow GETATTR: not a WRITE
    ]
    throttle = [
        {"ts_ns": at(t), "pid": 100, "tgid": 100, "comm": "writer", "bdi": "0:52",
         "pause_ms": p, "period_ms": 200, "paused_ms": 0, "think_ms": 0, "dirty": 900,
         "limit": 10000, "setpoint": 8000, "wb_dirty": 150, "wb_setpoint": 80,
         "dirty_ratelimit": 100, "task_ratelimit": 40, "dirtied": 32}
        for t, p in [(2000, 40), (2100, 60), (2200, 100)]
    ]
    vm = [
        {"ts_ns": at(1500), "kind": "vmscan_throttled", "pid": 90, "tgid": 90,
         "comm": "kswapd0", "reason": 1, "usec_delayed": 100_000},     # WRITEBACK, WRITE in flight
        {"ts_ns": at(1600), "kind": "vmscan_throttled", "pid": 91, "tgid": 91,
         "comm": "stress", "reason": 2, "usec_delayed": 50_000},       # ISOLATED: not counted
        {"ts_ns": at(20), "kind": "vmscan_throttled", "pid": 92, "tgid": 92,
         "comm": "early", "reason": 1, "usec_delayed": 50_000},        # nothing in flight yet
        {"ts_ns": at(800), "duration_ns": 40 * MS, "kind": "direct_reclaim", "pid": 101,
         "tgid": 101, "comm": "reader", "nr_reclaimed": 32},
        {"ts_ns": at(900), "kind": "shrink_inactive", "pid": 90, "tgid": 90, "comm": "kswapd0",
         "nr_scanned": 64, "nr_reclaimed": 10, "nr_writeback": 7},
        {"ts_ns": at(500), "duration_ns": 3000 * MS, "kind": "compaction", "pid": 102,
         "tgid": 102, "comm": "kcompactd0", "status": 1},
        {"ts_ns": at(510), "duration_ns": 2990 * MS, "kind": "migrate_pages", "pid": 102,
         "tgid": 102, "comm": "kcompactd0", "succeeded": 5, "failed": 2, "mode": 2},
    ]
    full_meta = make_meta(
        lost_events={"total": 3, "per_cpu": [3, 0], "by_kind": {"waits": 3}},
        server_threads=[{"connection": 52, "bdi": "0:52", "tgid": SERVER_TGID,
                         "pid": SERVER_TGID + 1, "comm": "fusewb-server", "replies": 3}],
        # asleep before tracing on another filesystem: listed, not flagged
        unseen_waiters=[{"pid": 77, "tgid": 77, "comm": "jbd2/vda1-8",
                         "frames": ["folio_wait_writeback", "ext4_sync_file", "do_fsync"]}],
        **_kernel_counts(version),
        **meta,
    )
    # 40 WRITEs ended in the kernel, 2 of them with rows: 38 fast ones only counted
    fast = [_request(1300 + i, 0.5, unique=100 + 2 * i) for i in range(38)]
    return write_capture(folder, full_meta, waits=waits, requests=requests, throttle=throttle,
                         vm=vm, stacks=stacks_table(), counted_only={"requests": fast})


def _kernel_counts(version: int) -> dict[str, Any]:
    """meta.json keys of a capture of ``version``: 2, histograms (write_capture's, of the rows
    and the fast WRITEs) and requests rows from 1 ms on; 1, the per-opcode counters."""
    if version >= 2:
        return {"row_threshold_ms": {"requests": 1.0, "waits": 0.0}}
    return {"schema_version": 1, "counters": {
        "req_summed": 38, "requests.WRITE.count": 40, "requests.WRITE.errors": 0,
        "requests.WRITE.total_ns": 240 * MS, "requests.WRITE.max_ns": 200 * MS,
        "requests.GETATTR.count": 1, "requests.GETATTR.total_ns": 300 * MS,
        "requests.GETATTR.max_ns": 300 * MS, "requests.GETATTR.errors": 0}}


def clean_capture(folder: Path, **meta: Any) -> Path:
    """A healthy capture: short waits in write paths, fast WRITEs, nothing lost: no flags."""
    waits = [_wait(100 + i, 2, "write", ino=20 + i) for i in range(5)]
    requests = [_request(50 + 10 * i, 1, unique=2 * i + 2) for i in range(5)]
    return write_capture(folder, make_meta(**meta), waits=waits, requests=requests,
                         stacks=stacks_table())
