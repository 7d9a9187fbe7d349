"""Stop a tracer on SIGINT, SIGTERM or SIGHUP, whatever the main thread is doing.

The interpreter's C-level handler writes the signal number to a wake-up pipe
(``signal.set_wakeup_fd``) the moment a signal arrives; a watcher thread reads it and sets the
tracer's Event. No Python-level handler has to run in the main thread, and none takes the
Event's lock (which the main thread holds for a moment inside ``Event.wait``).

SIGINT and SIGTERM are always caught, even when they were ignored at start: a shell without job
control starts background commands (``fusewb trace ... &`` in a script, a CI job) with SIGINT
ignored, and ``kill -INT PID`` must still stop the tracer (soak runs found a tracer ignoring
it). SIGHUP stays ignored when it was (``nohup``).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "StopOnSignals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_END = b"\0"  # no signal has number 0: tells the watcher to finish


def _noted(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do, the wake-up pipe carries the signal."""


class StopOnSignals:
    """``with StopOnSignals(stop) as signals:`` sets ``stop`` when a stop signal arrives;
    ``signals.received`` names the signals that did. Enter and exit in the main thread."""

    def __init__(self, stop: threading.Event, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.stop = stop
        self.signals = signals
        self.received: list[str] = []
        self._previous: dict[int, Any] = {}
        self._previous_wakeup = -1
        self._read_fd = self._write_fd = -1
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> "StopOnSignals":
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # set_wakeup_fd requires it
        self._watcher = threading.Thread(target=self._watch, name="fusewb-stop-signals",
                                         daemon=True)
        self._watcher.start()
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, _noted) for sig in self.signals
                          if sig != signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN}
        return self

    def _watch(self) -> None:
        while True:
            byte = os.read(self._read_fd, 1)
            if not byte or byte == _END:
                return
            if byte[0] in self._previous:
                self.received.append(signal.Signals(byte[0]).name)
                self.stop.set()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_wakeup)
        os.set_blocking(self._write_fd, True)
        os.write(self._write_fd, _END)
        if self._watcher is not None:
            self._watcher.join(5)
        os.close(self._read_fd)
        os.close(self._write_fd)
