"""What ``fusewb trace`` prints while it runs: one line per wait over the threshold, a status
line (:class:`StatusLine`: rewritten in place on a terminal, a plain line now and then
otherwise), and the summary at exit. ``fusewb run`` shows its progress with the same
:class:`StatusLine`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fusewb.contract.frames import WAIT_MACHINERY_PREFIXES
from fusewb.contract.meta import MISSED_TOTAL, missed_text

__all__ = ["path_hint", "wait_line", "WAIT_HEADER", "CaptureSummary", "StatusLine", "ERASE_LINE",
           "terminal_columns", "ticking"]

ERASE_LINE = "\r\x1b[K"  # to the start of the line, then erase to its end (ECMA-48 EL)


WAIT_HEADER = f"{'TIME':<8} {'COMM':<16} {'PID':>7} {'BDI':<10} {'INO':>10} {'WAIT_MS':>10}  PATH"


def path_hint(frames: list[str]) -> str:
    """The most telling frame of a wait's stack: the first FUSE function, else the first caller
    outside the wait machinery, else '?'."""
    for frame in frames:
        if frame.startswith("fuse_"):
            return frame
    for frame in frames:
        if not frame.startswith(WAIT_MACHINERY_PREFIXES):
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


class StatusLine:
    """A status line that does not scroll.

    On a terminal (``tty``) :meth:`show` rewrites one line in place (``\\r``, text cut to the
    terminal's width so it never wraps, erase to the end of the line), and lines printed
    through :meth:`print` appear above it. Elsewhere (a pipe, a file) :meth:`show` prints the
    text as a plain line every ``plain_every_s`` seconds from its first call, never when that
    is None.
    ``write`` writes text as is (no newline added); ``width`` gives the terminal's columns.
    Thread-safe: a ticker thread may call :meth:`show` while others :meth:`print`."""

    def __init__(self, write: Callable[[str], None], tty: bool, width: Callable[[], int],
                 plain_every_s: float | None = 5.0) -> None:
        self._write = write
        self.tty = tty
        self._width = width
        self._plain_every_s = plain_every_s
        self._text = ""
        self._drawn = False
        self._next_plain: float | None = None  # counted from the first show()
        self._lock = threading.Lock()

    def _draw(self) -> None:
        self._write("\r" + self._text[: max(self._width() - 1, 1)] + "\x1b[K")
        self._drawn = True

    def _erase(self) -> None:
        if self._drawn:
            self._write(ERASE_LINE)
            self._drawn = False

    def show(self, text: str) -> None:
        """Show ``text`` as the status (see the class docstring)."""
        with self._lock:
            self._text = text
            if self.tty:
                self._draw()
            elif self._plain_every_s is not None:
                now = time.monotonic()
                if self._next_plain is None:
                    self._next_plain = now + self._plain_every_s
                if now >= self._next_plain:
                    self._write(text + "\n")
                    self._next_plain = now + self._plain_every_s

    def print(self, out: Callable[[str], None], line: str) -> None:
        """``out(line)`` (a whole line, on this stream or another one on the same terminal)
        above the status line, which is drawn again below it."""
        with self._lock:
            self._erase()
            out(line)
            if self.tty and self._text:
                self._draw()

    def close(self) -> None:
        """Erase the status line; later output starts on a clean line."""
        with self._lock:
            self._erase()
            self._text = ""


def terminal_columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to; 80 when it is none."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 80


@contextmanager
def ticking(status: StatusLine, text: Callable[[], str], every_s: float = 1.0) -> Iterator[None]:
    """Show ``text()`` on ``status`` now and every ``every_s`` seconds from a thread while the
    ``with`` block runs; the line is erased at its end."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every_s):
            status.show(text())

    status.show(text())
    thread = threading.Thread(target=tick, name="fusewb-status", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(every_s + 5)
        status.close()


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
    dropped: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        t = self.tables
        out = [
            f"traced {self.seconds:.1f}s with the {self.plan} plan ({len(self.probes)} probes) "
            f"into {self.directory}",
            f"waits {t.get('waits', 0)} (ongoing {self.ongoing_waits}, max {self.max_wait_ms:.1f} ms), "
            f"requests {self.counters.get('req_ended', 0)} ended ({t.get('requests', 0)} rows, "
            f"ongoing {self.ongoing_requests}), "
            f"throttle {t.get('throttle', 0)}, vm {t.get('vm', 0)}",
        ]
        if self.server_threads:
            servers = sorted({(s["bdi"] or s["connection"], s["tgid"], s["comm"]) for s in self.server_threads})
            out.append("FUSE servers: " + ", ".join(f"{b}: {c} (pid {p})" for b, p, c in servers))
        if self.unseen_waiters:
            tasks = ", ".join(f"{t['comm']} {t['pid']}" for t in self.unseen_waiters[:5])
            out.append(f"{len(self.unseen_waiters)} task(s) waited on writeback since before tracing "
                       f"began (bdi unknown; meta.json unseen_waiters): {tasks}")
        parts = self.dropped.get("parts") or {}
        if any(parts.values()):
            rows = ", ".join(f"{t} {n}" for t, n in (self.dropped.get("rows") or {}).items() if n)
            out.append(f"--max-size dropped the {sum(parts.values())} oldest parts "
                       f"(rows: {rows}); the capture keeps the newest data")
        lost = self.lost.get("total", 0)
        if lost:
            by_kind = ", ".join(f"{k} {v}" for k, v in self.lost["by_kind"].items() if v)
            out.append(f"LOST {lost} events (ring buffer full: {by_kind}); rerun with a bigger --ring-pages")
        else:
            out.append("lost events: 0")
        missed = self.counters.get(MISSED_TOTAL, 0)
        if missed:
            out.append(f"SKIPPED {missed} probe runs: the kernel did not run them because a BPF program "
                       f"was already running on that CPU ({missed_text(self.counters)}); those events "
                       "are not counted")
        return out
