"""Run a call in a thread and hand its result, or its exception, to the thread that asks: the
one copy of that plumbing for the tracer's background session, the loads' bounded kernel calls
and the scenarios' loads (layers above this one; it imports nothing of fusewb).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Worker"]


class Worker:
    """``call()`` in a daemon thread named ``name``, started at once."""

    def __init__(self, call: Callable[[], Any], name: str) -> None:
        self._call = call
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._call()
        except BaseException as exc:  # noqa: BLE001 - re-raised by result(), in the asking thread
            self._error = exc

    def join(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds; whether the call has finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> Any:
        """The call's return value (None while it runs); its exception re-raised here."""
        if self._error is not None:
            raise self._error
        return self._result
