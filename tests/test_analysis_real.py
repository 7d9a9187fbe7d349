"""A real capture from the tracer on this kernel, with the fixture, analyses cleanly (-W error),
with the same report from the pandas and the streaming engine."""

from __future__ import annotations

import json
import mmap
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support import TIMEOUT_SCALE, require, require_bpf, require_fuse

TRACE_SECONDS = 6
READY_TIMEOUT = 90.0 * TIMEOUT_SCALE


def _stderr_lines(process: subprocess.Popen) -> tuple[queue.Queue, threading.Thread]:
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in process.stderr:
            lines.put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


def _wait_ready(lines: queue.Queue, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            assert process.poll() is None, f"tracer exited early: {''.join(seen)[-2000:]}"
            continue
        seen.append(line)
        if line.startswith("tracing"):
            return
    raise AssertionError(f"tracer not ready within {READY_TIMEOUT:g} s: {''.join(seen)[-2000:]}")


def _msync(path: Path, size: int = 1 << 20) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, size) as mapping:
            mapping[:] = b"x" * size
            mapping.flush()
    finally:
        os.close(fd)


def test_real_capture_analyses_without_warnings(tmp_path: Path) -> None:
    require_fuse()
    require_bpf()
    try:
        from fusewb.fixtures.faults import Faults
        from fusewb.fixtures.manage import mount_fixture
    except ImportError:
        require(False, "needs the fixture filesystem (fusewb.fixtures.manage)")
    mnt, cap = tmp_path / "mnt", tmp_path / "cap"
    writer = pump = None
    with mount_fixture(mnt, Faults(latency_ms=120)) as fixture:
        tracer = subprocess.Popen(
            [sys.executable, "-m", "fusewb.cli", "trace", "--mount", str(mnt), "--duration",
             str(TRACE_SECONDS), "-o", str(cap)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            lines, pump = _stderr_lines(tracer)
            _wait_ready(lines, tracer)
            _msync(mnt / "m.bin")
            fixture.stall()
            # a writer whose fsync is still waiting when tracing stops
            writer = subprocess.Popen([sys.executable, "-c", (
                "import os; fd = os.open(%r, os.O_RDWR | os.O_CREAT); "
                "os.write(fd, b's' * 65536); os.fsync(fd)") % str(mnt / "s.bin")])
            assert tracer.wait(timeout=TRACE_SECONDS + 60) == 0
        finally:
            fixture.release()
            if writer is not None:
                writer.wait(timeout=60)
            if tracer.poll() is None:
                tracer.send_signal(signal.SIGINT)
                tracer.wait(timeout=30)
            if pump is not None:
                pump.join(timeout=10)
            tracer.stderr.close()
    result = subprocess.run(
        [sys.executable, "-W", "error", "-m", "fusewb.cli", "analyze", str(cap), "--format",
         "json"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONWARNINGS="error"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report["capture"]["lost_events"] == 0 and report["capture"]["complete"]
    assert "fsync" in {row["path"] for row in report["waits_by_path"]}
    blocked = [f for f in report["flags"] if f["flag"] == "BLOCKED_WAIT"]
    assert any(f["pid"] == os.getpid() and f["path"] == "fsync" for f in blocked), blocked
    assert any(f["pid"] == writer.pid and f["ongoing"] and f["path"] == "fsync" for f in blocked)
    stalled = [f for f in report["flags"] if f["flag"] == "STALLED_REQUEST"]
    assert stalled and stalled[0]["ongoing"] and stalled[0]["mount"] == str(mnt)
    streaming = subprocess.run(
        [sys.executable, "-W", "error", "-m", "fusewb.cli", "analyze", str(cap), "--format",
         "json", "--engine", "streaming"], capture_output=True, text=True, timeout=120)
    assert streaming.returncode == 0 and streaming.stderr == "", streaming.stderr
    assert json.loads(streaming.stdout) == report  # the same answers part by part
    text = subprocess.run([sys.executable, "-W", "error", "-m", "fusewb.cli", "analyze", str(cap)],
                          capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and text.stderr == "" and "fuse_fsync" in text.stdout
