"""What ``fusewb trace`` prints while it runs: one line per wait over the threshold, a progress
line on long runs, and the summary at exit."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["path_hint", "wait_line", "WAIT_HEADER"]

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
