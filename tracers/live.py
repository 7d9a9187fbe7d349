"""What ``fusewb trace`` prints while it runs: one line per wait over the threshold, a progress
line on long runs, and the summary at exit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["path_hint", "wait_line", "WAIT_HEADER", "CaptureSummary"]

# Frames of the wait machinery itself, skipped when naming the path a wait came from.
_WAIT_MACHINERY = (
    "folio_wait", "wait_on_page", "__filemap_fdatawait", "filemap_fdatawait",
    "file_write_and_wait", "filemap_write_and_wait", "__schedule", "schedule", "io_schedule",
)

WAIT_HEADER = f"{'TIME':<8} {'COMM':<16} {'PID':>7} {'BDI':<10} {'INO':>10} {'WAIT_MS':>10}  PATH"


def path_hint(frames: list[str]) -> str:
    """The most telling frame of a wait's stack: the first FUSE function, else the first caller
    outside the wait machinery, else '?'."""
    for frame in frames:
        if frame.startswith("fuse_"):
            return frame
    for frame in frames:
        if not frame.startswith(_WAIT_MACHINERY):
            return frame
    return "?"


def wait_line(row: dict[str, Any], frames: list[str]) -> str:
    """One live-view line for a wait row (finished or ongoing)."""
    ms = row["duration_ns"] / 1e6
    state = " (ongoing)" if row.get("ongoing") else ""
    return (
        f"{time.strftime('%H:%M:%S'):<8} {row['comm']:<16.16} {row['pid']:>7} {row['bdi']:<10} "
        f"{row['ino']:>10} {ms:>10.1f}  {path_hint(frames)}{state}"
    )


@dataclass
class CaptureSummary:
    """What a finished session wrote, for the exit summary and for callers."""

    directory: Path
    plan: str
    probes: list[str]
    tables: dict[str, int]
    lost: dict[str, Any]
    counters: dict[str, int]
    ongoing_waits: int
    ongoing_requests: int
    max_wait_ms: float
    seconds: float
    server_threads: list[dict[str, Any]] = field(default_factory=list)
    unseen_waiters: list[dict[str, Any]] = field(default_factory=list)

    def lines(self) -> list[str]:
        t = self.tables
        out = [
            f"traced {self.seconds:.1f}s with the {self.plan} plan ({len(self.probes)} probes) "
            f"into {self.directory}",
            f"waits {t.get('waits', 0)} (ongoing {self.ongoing_waits}, max {self.max_wait_ms:.1f} ms), "
            f"requests {t.get('requests', 0)} (ongoing {self.ongoing_requests}), "
            f"throttle {t.get('throttle', 0)}, vm {t.get('vm', 0)}",
        ]
        if self.server_threads:
            servers = sorted({(s["bdi"] or s["connection"], s["tgid"], s["comm"]) for s in self.server_threads})
            out.append("FUSE server threads: " + ", ".join(f"{b}: {c} (pid {p})" for b, p, c in servers))
        if self.unseen_waiters:
            tasks = ", ".join(f"{t['comm']} {t['pid']}" for t in self.unseen_waiters[:5])
            out.append(f"{len(self.unseen_waiters)} task(s) waited on writeback since before tracing "
                       f"began (bdi unknown; meta.json unseen_waiters): {tasks}")
        lost = self.lost.get("total", 0)
        if lost:
            by_kind = ", ".join(f"{k} {v}" for k, v in self.lost["by_kind"].items() if v)
            out.append(f"LOST {lost} events (ring buffer full: {by_kind}); rerun with a bigger --ring-pages")
        else:
            out.append("lost events: 0")
        return out
