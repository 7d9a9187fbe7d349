"""Stop a tracer on SIGINT, SIGTERM or SIGHUP without taking a lock in the signal handler.

A Python signal handler runs in the main thread between two bytecodes. ``threading.Event.set``
takes the Event's lock, and the main thread holds that same lock for a moment inside
``Event.wait`` (where a tracer's loop spends its time): a signal landing there deadlocks the
tracer for good. :class:`StopOnSignals` lets the handler only record the signal and write one
byte to a pipe; a watcher thread reads it and sets the Event. Signals that were ignored when it
started stay ignored (``nohup`` ignores SIGHUP).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "StopOnSignals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopOnSignals:
    """``with StopOnSignals(stop) as signals:`` sets ``stop`` when a stop signal arrives;
    ``signals.received`` names the signals that did."""

    def __init__(self, stop: threading.Event, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.stop = stop
        self.signals = signals
        self.received: list[str] = []
        self._previous: dict[int, Any] = {}
        self._read_fd = self._write_fd = -1
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> "StopOnSignals":
        self._read_fd, self._write_fd = os.pipe()
        self._watcher = threading.Thread(target=self._watch, name="fusewb-stop-signals",
                                         daemon=True)
        self._watcher.start()
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.signals
                          if signal.getsignal(sig) is not signal.SIG_IGN}
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)  # list.append takes no Python lock
        os.write(self._write_fd, b"s")

    def _watch(self) -> None:
        if os.read(self._read_fd, 1) == b"s":
            self.stop.set()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        os.write(self._write_fd, b"e")  # lets the watcher go if no signal came
        if self._watcher is not None:
            self._watcher.join(5)
        os.close(self._read_fd)
        os.close(self._write_fd)
