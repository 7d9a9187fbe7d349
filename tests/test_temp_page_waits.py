"""A fsync and a close behind a FUSE server that answers each WRITE after 3 s, traced and
analysed on the running kernel: a fsync-path and a close-path wait of about 3 s each with their
kernel stacks, and the WRITEs as STALLED_REQUEST. Before 6.16 (temp pages, e.g. Debian 12's 6.1 in the guest stage of
``make test``) the task waits inside fuse.ko (``fuse_set_nowrite``, timed by kprobes) and the
requests come from kprobes keyed on the request pointer; on 6.16+ it waits in
``folio_wait_writeback`` and the requests come from the fuse:* tracepoints."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusewb.fixtures.faults import Faults
from tests.fixture_helpers import mounted
from tests.support import require_bpf
from tests.test_analysis_real import _stderr_lines, _wait_ready

LATENCY_MS = 3000
SCALE = float(os.environ.get("FUSEWB_TIMEOUT_SCALE", "1") or 1)  # the TCG guest runs ~10x slower


def _fsync_write(path: Path) -> float:
    """Write 64 KiB through the page cache and fsync it: seconds the fsync took."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"w" * 65536)
        began = time.monotonic()
        os.fsync(fd)
        return time.monotonic() - began
    finally:
        os.close(fd)


def _close_write(path: Path) -> float:
    """Write 64 KiB through the page cache and close: seconds the close took (fuse_flush)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"c" * 65536)
    began = time.monotonic()
    os.close(fd)
    return time.monotonic() - began

@pytest.mark.timeout(120 * SCALE)
def test_fsync_and_close_behind_slow_writes_are_waits_and_stalled_writes(tmp_path: Path) -> None:
    require_bpf()
    mnt, cap = tmp_path / "mnt", tmp_path / "cap"
    with mounted(mnt, Faults(latency_ms=LATENCY_MS)):
        tracer = subprocess.Popen(
            [sys.executable, "-m", "fusewb.cli", "trace", "--mount", str(mnt), "--duration", "240",
             "-o", str(cap)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        pump = None
        try:
            lines, pump = _stderr_lines(tracer)
            _wait_ready(lines, tracer)
            took = {"fsync": _fsync_write(mnt / "f.bin"), "close": _close_write(mnt / "c.bin")}
            tracer.send_signal(signal.SIGINT)
            assert tracer.wait(timeout=120) == 0
        finally:
            if tracer.poll() is None:
                tracer.kill()
                tracer.wait(timeout=30)
            if pump is not None:
                pump.join(timeout=10)
            tracer.stderr.close()
    for path, seconds in took.items():
        assert seconds >= LATENCY_MS / 1000 * 0.95, f"the {path} took {seconds:.2f} s: the server's latency was not applied"
    result = subprocess.run([sys.executable, "-m", "fusewb.cli", "analyze", str(cap), "--format", "json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    kernel = platform.release()
    blocked = [f for f in report["flags"] if f["flag"] == "BLOCKED_WAIT" and f["pid"] == os.getpid()]
    meta = json.loads((cap / "meta.json").read_text())
    for path, seconds in took.items():
        waits = [f for f in blocked if f["path"] == path]
        assert waits, f"{kernel}: no BLOCKED_WAIT on the {path} path; flags {blocked}"
        assert 0.9 * LATENCY_MS <= waits[0]["duration_ms"] <= seconds * 1000 + 50, (kernel, seconds, waits)
        stack = waits[0]["evidence"]  # "1 wait, worst N ms at T: frame < caller < ..."
        assert {"fsync": "fuse_fsync", "close": "fuse_flush"}[path] in stack, (kernel, stack)
        if "kprobe:fuse_set_nowrite" in meta["probes"]:
            # the temp-page era's wait: inside fuse.ko, not in folio_wait_writeback
            assert "fuse_set_nowrite" in stack, (kernel, stack)
    stalled = [f for f in report["flags"] if f["flag"] == "STALLED_REQUEST"]
    assert stalled and stalled[0]["mount"] == str(mnt), (kernel, report["flag_counts"])
    assert "WRITE" in json.dumps(stalled[0]["evidence"]), stalled[0]
