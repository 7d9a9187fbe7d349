"""StopOnSignals: a stop signal sets the tracer's Event while the main thread sits inside
``Event.wait``; SIGINT stops it even when it was ignored at start (a background job of a shell
without job control), SIGHUP stays ignored under nohup."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support import SIGHUP_DEFAULT

CHILD = """
import sys, threading
from fusewb.tracers.stopsignals import StopOnSignals
stop = threading.Event()
with StopOnSignals(stop) as signals:
    print("ready", flush=True)
    while not stop.wait(0.00001):
        pass
print("stopped by", signals.received[0], flush=True)
"""


@contextmanager
def _child(prelude: str = "") -> Iterator[subprocess.Popen]:
    """The loop above in a child (after ``prelude``), ready when yielded; killed if still alive."""
    child = subprocess.Popen([*SIGHUP_DEFAULT, sys.executable, "-c", prelude + CHILD],
                             stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_each_stop_signal_stops_a_busy_wait_loop(sig: signal.Signals) -> None:
    for _ in range(10):
        with _child() as child:
            time.sleep(0.05)
            child.send_signal(sig)
            out, _ = child.communicate(timeout=10)
        assert child.returncode == 0
        assert out.strip() == f"stopped by {sig.name}"


def test_an_ignored_sighup_stays_ignored() -> None:
    with _child("import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN)\n") as child:
        child.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert child.poll() is None, "SIGHUP was ignored before (nohup): it must not stop the loop"
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=10)
    assert out.strip() == "stopped by SIGTERM"


def test_sigint_ignored_at_start_still_stops() -> None:
    """What a shell without job control does to a background command: SIGINT ignored."""
    with _child("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n") as child:
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=10)
    assert out.strip() == "stopped by SIGINT"
