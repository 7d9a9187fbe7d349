"""Stop a tracer on SIGINT, SIGTERM or SIGHUP, whatever the main thread is doing.

A Python-level signal handler runs only when the main thread next checks for pending calls, and
a handler that sets a ``threading.Event`` takes the Event's lock, which the main thread holds for
a moment inside ``Event.wait`` (where a tracer's loop spends its time). Both were seen to leave a
tracer running after SIGINT (soak runs: the main thread in ``Condition.wait``, no handler run).
:class:`StopOnSignals` does not depend on either: the interpreter's C-level handler writes the
signal number to a wake-up pipe (``signal.set_wakeup_fd``) the moment the signal arrives, and a
watcher thread reads it and sets the Event. Signals that were ignored when it started stay
ignored (``nohup`` ignores SIGHUP).
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
                          if signal.getsignal(sig) is not signal.SIG_IGN}
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
