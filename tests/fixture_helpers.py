"""Mounting the fixture filesystem in tests: skip rules, bounded waits, cleanup on failure."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from fusewb.fixtures.faults import Faults
from fusewb.fixtures.manage import Fixture, mount_fixture, unmount_fixture
from fusewb.tracers.mounts import mount_for_path
from fusewb.tracers.procscan import read_frames
from tests.support import TIMEOUT_SCALE, require, require_fuse

__all__ = ["mounted", "wait_until", "in_thread", "asleep_in"]


@contextlib.contextmanager
def mounted(folder: Path, faults: Faults | None = None, **options: object) -> Iterator[Fixture]:
    """A fixture mounted on ``folder`` for the ``with`` block; always unmounted afterwards."""
    require_fuse()
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        require(False, "needs pyfuse3 (make setup)")
    fixture = mount_fixture(folder, faults or Faults(), **options)
    try:
        yield fixture
    finally:
        report = fixture.unmount()
        assert mount_for_path(fixture.mountpoint) is None, report
        unmount_fixture(fixture.mountpoint)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` (times ``TIMEOUT_SCALE``) passes; return
    whether it held."""
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, dict]:
    """Start ``call`` in a daemon thread; the dict gets ``seconds`` or ``error`` when it ends."""
    outcome: dict = {}

    def target() -> None:
        start = time.monotonic()
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def asleep_in(pid: int, frame: str, states: str = "D") -> bool:
    """Is ``pid`` asleep (a state of ``states``) with ``frame`` on its kernel stack (/proc)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state in states and frame in (read_frames(pid, pid) or [])
