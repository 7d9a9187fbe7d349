"""What people see on a terminal, for real, through a pseudo-terminal: ``fusewb trace`` keeps
one status line rewritten in place (never wider than the terminal, so it never wraps) while a
real FUSE WRITE load runs; with stderr a pipe it prints plain lines instead; ``fusewb run``
shows the scenario and the time elapsed the same way."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import time


from tests.fixture_helpers import mounted
from tests.test_tracer import load
from tests.test_tracer_faults import (
    WRITE_LOOP, _prepare, assert_detached, read_terminal, stop_load,
)


FUSEWB = [sys.executable, "-m", "fusewb.cli"]
COLUMNS = 72
EXIT_S = 120.0
STATUS = re.compile(r"\[(\d+)s\] requests (\d+) \((\d+) rows\), waits (\d+) \(over 50 ms (\d+)")


def _run_on_a_terminal(args: list[str], timeout: float) -> tuple[int, bytes, int]:
    """``fusewb ARGS`` with stdout and stderr on a pty of COLUMNS columns (output
    post-processing off, so bytes arrive as written); exit status, output, pid."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # no \n -> \r\n
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    try:
        proc = subprocess.Popen([*FUSEWB, *args], stdin=subprocess.DEVNULL, stdout=slave,
                                stderr=slave)
    finally:
        os.close(slave)
    deadline = time.monotonic() + timeout
    try:
        output = read_terminal(master, None, timeout)
        code = proc.wait(max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        os.close(master)
    return code, output, proc.pid


def _status_segments(output: str) -> list[str]:
    """The texts drawn after a carriage return, without the erase-to-end-of-line."""
    return [seg.split("\x1b[K")[0] for seg in output.split("\r")[1:] if seg.split("\x1b[K")[0]]


def test_trace_status_line_is_rewritten_in_place_on_a_terminal(tmp_path) -> None:
    before = _prepare()
    capture = tmp_path / "cap"
    with mounted(tmp_path / "mnt", writeback_cache=False) as fx:
        writer = load(WRITE_LOOP, f"{fx.mountpoint}/w.dat", 30)
        try:
            code, raw, _pid = _run_on_a_terminal(
                ["trace", "--mount", fx.mountpoint, "--duration", "4", "-o", str(capture)], EXIT_S)
        finally:
            stop_load(writer)
    output = raw.decode(errors="replace")
    assert code == 0 and "Traceback" not in output, output[-3000:]
    segments = _status_segments(output)
    statuses = [STATUS.match(seg) for seg in segments if seg.startswith("[")]
    # drawn again and again in place; how often is the tracing loop's cadence (every 0.5 s
    # when it keeps up), a speed that a loaded 2-core machine does not promise: 4 in 4 s once
    assert len(statuses) >= 2 and all(statuses), segments
    assert all(len(seg) <= COLUMNS - 1 for seg in segments), segments
    requests = [int(m.group(2)) for m in statuses]  # as the kernel counted them (histograms)
    assert requests == sorted(requests) and requests[-1] > 100, requests  # the WRITE loop counted
    # Only whole lines scroll: the start line, the wait header, the summary, never a status.
    lines = [line for line in output.replace("\x1b[K", "").split("\n") if line.strip("\r")]
    assert len(lines) <= 8, lines
    assert output.rstrip("\n").split("\n")[-1].startswith("lost events: 0"), output[-500:]
    assert not any(line.startswith("\r[") for line in output.split("\n")[-4:])  # erased
    assert_detached(before)


def test_trace_status_is_a_plain_line_when_stderr_is_a_pipe(tmp_path) -> None:
    before = _prepare()
    done = subprocess.run([*FUSEWB, "trace", "--duration", "6", "-o", str(tmp_path / "cap")],
                          capture_output=True, text=True, timeout=EXIT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    assert any(STATUS.match(line) for line in done.stderr.splitlines()), done.stderr
    assert_detached(before)


def test_run_shows_scenario_and_elapsed_on_a_terminal(tmp_path) -> None:
    before = _prepare()
    code, raw, _pid = _run_on_a_terminal(["run", "msync-slow", "--keep", str(tmp_path)], 240)
    output = raw.decode(errors="replace")
    assert code == 0 and "Traceback" not in output, output[-3000:]
    progress = [seg for seg in _status_segments(output) if seg.startswith("fusewb run:")]
    assert progress, output[-3000:]
    assert all(re.fullmatch(r"fusewb run: scenario 1/1 msync-slow, \d+:\d\d in it, "
                            r"\d+:\d\d elapsed", seg) for seg in progress), progress
    assert all(len(seg) <= COLUMNS - 1 for seg in progress)
    assert "== 1/1 msync-slow done in" in output
    assert "\r" not in output.split("Summary")[-1]  # erased before the summary
    assert_detached(before)

