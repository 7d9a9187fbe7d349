"""``fusewb trace`` under faults, for real: the capture's file system fills up (before and while
tracing) or answers EIO, the capture directory is removed, the traced FUSE server is killed or
frozen, the traced mount is unmounted (and mounted again), the tracer gets SIGINT, SIGTERM,
SIGHUP, a terminal hang-up or SIGKILL, and two tracers run at once.

After each case: the exit status; no traceback and exactly one ``fusewb trace: ...`` line when it
failed (none when it did not); none of the tracer's BPF programs left loaded; no temporary file
left in the capture; and ``fusewb analyze`` reads what was written (exit 0 or 1), with
INCOMPLETE_CAPTURE exactly when the capture was cut short."""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from fusewb.fixtures.faults import Faults
from tests.fixture_helpers import mounted, wait_until
from tests.support import SIGHUP_DEFAULT, require, require_bpf, require_fuse, require_root
from tests.test_tracer import (
    MSYNC_LOAD, finish, load, loaded_program_ids, programs_held_by, read_table,
)


FUSEWB = [sys.executable, "-m", "fusewb.cli"]
READY_S = 60.0
EXIT_S = 30.0
INCOMPLETE = "INCOMPLETE_CAPTURE"

# One WRITE request per pwrite without the writeback cache: a steady stream of request rows
# (arguments: path, seconds, and the pause between writes, 2 ms unless given; 0: as fast as the
# fixture answers).
WRITE_LOOP = """
import os, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.002
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
end = time.monotonic() + seconds
while time.monotonic() < end:
    os.pwrite(fd, b"x" * 4096, 0)
    if pause:
        time.sleep(pause)
os.close(fd)
"""
# Dirties 1 MiB in the page cache, then waits for a line on stdin before fsync.
GATED_FSYNC = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"f" * (1 << 20))
print("written", flush=True)
sys.stdin.readline()
os.fsync(fd)
os.close(fd)
"""


def _prepare() -> set[int]:
    """Skip without the kernel features; the BPF programs loaded before the test."""
    require_bpf()
    require_fuse()
    require(shutil.which("bpftool") is not None, "needs bpftool (Debian bpftool)")
    return loaded_program_ids()


def _where_is(pid: int) -> str:
    """The Python stacks (py-spy) and kernel stacks of every thread of ``pid``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        python = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True,
                                text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        python = f"(py-spy: {exc})"
    kernel = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("[0-9]*")):
        try:
            kernel.append(f"{task.name}: " + (task / "stack").read_text().replace("\n", " < "))
        except OSError:
            continue
    return python + "\n" + "\n".join(kernel)


class Trace:
    """``fusewb trace`` as a child process: stderr collected by a thread, stdout to a file."""

    def __init__(self, args: list[str], stdout: Path,
                 wrapper: tuple[str, ...] = SIGHUP_DEFAULT) -> None:
        self.stdout = stdout
        with open(stdout, "w") as out:
            self.proc = subprocess.Popen([*wrapper, *FUSEWB, "trace", *args], stdout=out,
                                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                         text=True)
        self.lines: list[str] = []
        self.started = threading.Event()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        self.held: set[int] = set()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("tracing "):
                self.started.set()

    def ready(self, timeout: float = READY_S) -> bool:
        """Whether tracing is live; records the BPF programs it holds."""
        if not wait_until(lambda: self.started.is_set() or self.proc.poll() is not None, timeout):
            return False
        if self.started.is_set():
            self.held = programs_held_by(self.proc.pid)
        return self.started.is_set()

    def require_ready(self) -> None:
        if not self.ready():
            self.kill()
            pytest.fail(f"fusewb trace did not start: {self.stderr[-2000:]}")

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def live_output(self) -> str:
        return self.stdout.read_text()

    def wait(self, timeout: float = EXIT_S) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            where = _where_is(self.proc.pid)
            self.proc.kill()
            self.proc.wait(30)
            pytest.fail(f"fusewb trace did not exit within {timeout:g} s; it was at:\n{where}")
        self.pump.join(timeout)
        return code

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


def assert_exit(trace: Trace, code: int, expected: int, problem: str | None = None) -> None:
    """The exit status; no traceback; one ``fusewb trace:`` line (the last) iff it failed."""
    err = trace.stderr
    assert code == expected, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    errors = [line for line in trace.lines if line.startswith("fusewb trace:")]
    if expected == 0:
        assert not errors, err
        return
    assert len(errors) == 1 and trace.lines[-1] == errors[0], err
    assert problem is None or problem in errors[0], errors[0]


def assert_detached(before: set[int], *traces: Trace) -> None:
    """None of the tracers' programs, and no program loaded since the test began, remains."""
    assert_programs_gone(before, set().union(*(t.held for t in traces)))


def assert_programs_gone(before: set[int], held: set[int]) -> None:
    """Neither ``held`` nor any program loaded since ``before`` remains loaded."""

    def gone() -> bool:
        now = loaded_program_ids()
        return not (now & held) and not (now - before)

    # the kernel frees a dead tracer's programs once its files are closed
    assert wait_until(gone, 15, 0.2), f"BPF programs left: {loaded_program_ids() - before}"


def assert_no_tmp(capture: Path) -> None:
    assert not list(capture.rglob("*.tmp")), list(capture.rglob("*.tmp"))


def meta(capture: Path) -> dict:
    return json.loads((capture / "meta.json").read_text())


def analyzed_flags(capture: Path) -> set[str]:
    """The flags ``fusewb analyze`` raises on the capture (exit 0 or 1, no traceback)."""
    done = subprocess.run(FUSEWB + ["analyze", str(capture), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr[-2000:]
    return {flag["flag"] for flag in json.loads(done.stdout)["flags"]}


def stop_load(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


@contextmanager
def small_tmpfs(folder: Path, size: str = "8m") -> Iterator[Path]:
    """A real small file system (tmpfs of ``size``) on ``folder``; always unmounted."""
    require_root()
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
                   check=True, timeout=30)
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], timeout=30, check=False).returncode:
            subprocess.run(["umount", "-l", str(folder)], timeout=30, check=False)


def fill(folder: Path) -> None:
    """Write a file on ``folder`` until its file system is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


# ---- the capture's file system ------------------------------------------------------------
def test_disk_full_at_start_exits_2_and_leaves_nothing(tmp_path) -> None:
    before = _prepare()
    with small_tmpfs(tmp_path / "small") as small:
        fill(small)
        trace = Trace(["-o", str(small / "cap")], tmp_path / "stdout")
        try:
            code = trace.wait(READY_S)
        finally:
            trace.kill()
        assert_exit(trace, code, 2, "no space left for capture")
        assert not (small / "cap").exists()  # the empty folders it made are gone again
    assert_detached(before, trace)


def test_disk_full_while_tracing_exits_2_and_keeps_the_parts(tmp_path) -> None:
    """The known bug: a traceback, exit 1, a ``.part-*.parquet.tmp`` left behind."""
    before = _prepare()
    with small_tmpfs(tmp_path / "small") as small, \
            mounted(tmp_path / "mnt", writeback_cache=False) as fx:
        capture = small / "cap"
        trace = Trace(["--all-requests", "--mount", fx.mountpoint, "-o", str(capture)],
                      tmp_path / "stdout")
        writer = None
        try:
            trace.require_ready()
            writer = load(WRITE_LOOP, f"{fx.mountpoint}/w.dat", 60)
            assert wait_until(lambda: any((capture / "requests").glob("part-*.parquet")), 15)
            kept = sorted(capture.rglob("part-*.parquet"))
            fill(small)
            code = trace.wait()
        finally:
            trace.kill()
            if writer is not None:
                stop_load(writer)
        assert_exit(trace, code, 2, "no space left for capture")
        assert_no_tmp(capture)
        assert set(kept) <= set(capture.rglob("part-*.parquet"))
        assert meta(capture)["complete"] is False
        assert not read_table(capture, "requests").empty
        assert INCOMPLETE in analyzed_flags(capture)
    assert_detached(before, trace)


def test_io_error_on_the_capture_exits_2(tmp_path) -> None:
    """The capture on a FUSE mount whose server starts answering every WRITE with EIO."""
    before = _prepare()
    with mounted(tmp_path / "out", writeback_cache=False) as out:
        capture = Path(out.mountpoint) / "cap"
        trace = Trace(["--all-requests", "--mount", out.mountpoint, "-o", str(capture)],
                      tmp_path / "stdout")
        try:
            trace.require_ready()
            out.set_faults(eio_fraction=1.0)
            code = trace.wait()
        finally:
            trace.kill()
            out.set_faults(eio_fraction=0.0)
        assert_exit(trace, code, 2, "Input/output error")
        assert_no_tmp(capture)
        assert meta(capture)["complete"] is False
        assert INCOMPLETE in analyzed_flags(capture)
    assert_detached(before, trace)


def test_capture_directory_removed_exits_2(tmp_path) -> None:
    before = _prepare()
    capture = tmp_path / "cap"
    trace = Trace(["--all-requests", "-o", str(capture)], tmp_path / "stdout")
    try:
        trace.require_ready()
        # the tracer may be creating a file in it right now: rmdir then fails with ENOTEMPTY
        assert wait_until(lambda: not shutil.rmtree(capture, ignore_errors=True)
                          and not capture.exists(), 10)
        code = trace.wait()
    finally:
        trace.kill()
    assert_exit(trace, code, 2, f"capture directory {capture} was removed while tracing")
    assert not capture.exists()  # not made again
    assert_detached(before, trace)


# ---- the traced FUSE server and mount -----------------------------------------------------
def test_server_killed_while_traced_keeps_tracing(tmp_path) -> None:
    before = _prepare()
    capture = tmp_path / "cap"
    with mounted(tmp_path / "mnt", Faults(stall=True)) as fx:
        trace = Trace(["--all-requests", "--mount", fx.mountpoint, "-o", str(capture)],
                      tmp_path / "stdout")
        writer = None
        try:
            trace.require_ready()
            writer = load(MSYNC_LOAD, f"{fx.mountpoint}/stalled.dat", 1)
            assert wait_until(lambda: "(ongoing)" in trace.live_output(), 20)
            os.kill(fx.pid, signal.SIGKILL)  # the connection is aborted: the wait ends
            writer.communicate(timeout=30)
            time.sleep(1.5)  # a flush after the server's death
            assert trace.proc.poll() is None, trace.stderr
            code = trace.stop()
        finally:
            trace.kill()
            if writer is not None:
                stop_load(writer)
    assert_exit(trace, code, 0)
    assert meta(capture)["complete"] is True
    assert_no_tmp(capture)
    waits = read_table(capture, "waits")
    assert not waits.empty and not waits.ongoing.all()  # the aborted wait ended while traced
    assert INCOMPLETE not in analyzed_flags(capture)
    assert_detached(before, trace)


def test_server_frozen_while_traced_records_ongoing_waits(tmp_path) -> None:
    before = _prepare()
    capture = tmp_path / "cap"
    with mounted(tmp_path / "mnt") as fx:
        trace = Trace(["--all-requests", "--mount", fx.mountpoint, "-o", str(capture)],
                      tmp_path / "stdout")
        writer = subprocess.Popen([sys.executable, "-c", GATED_FSYNC, f"{fx.mountpoint}/f.dat"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            trace.require_ready()
            assert select.select([writer.stdout], [], [], 20)[0], "the writer did not write"
            assert writer.stdout.readline().strip() == "written"
            os.kill(fx.pid, signal.SIGSTOP)
            writer.stdin.write("go\n")
            writer.stdin.flush()
            assert wait_until(lambda: "(ongoing)" in trace.live_output(), 20)
            code = trace.stop()
        finally:
            trace.kill()
            os.kill(fx.pid, signal.SIGCONT)
            try:
                writer.communicate(timeout=30)
            finally:
                stop_load(writer)
    assert_exit(trace, code, 0)
    assert meta(capture)["complete"] is True
    assert_no_tmp(capture)
    waits = read_table(capture, "waits")
    assert waits.ongoing.any()
    assert INCOMPLETE not in analyzed_flags(capture)
    assert_detached(before, trace)


def test_unmounted_while_traced_keeps_tracing_and_follows_a_remount(tmp_path) -> None:
    before = _prepare()
    capture, mountpoint = tmp_path / "cap", tmp_path / "mnt"
    trace = None
    try:
        with mounted(mountpoint, writeback_cache=False) as fx:
            trace = Trace(["--all-requests", "--mount", fx.mountpoint, "-o", str(capture)],
                          tmp_path / "stdout")
            trace.require_ready()
            finish(load(WRITE_LOOP, f"{fx.mountpoint}/a.dat", 0.5))
        assert wait_until(lambda: "was unmounted; still tracing" in trace.stderr, 10), trace.stderr
        assert trace.proc.poll() is None
        with mounted(mountpoint, writeback_cache=False) as fx:
            remounted_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            finish(load(WRITE_LOOP, f"{fx.mountpoint}/b.dat", 0.5))

            def seen_again() -> bool:
                requests = read_table(capture, "requests")
                return not requests.empty and (requests.send_ts_ns > remounted_ns).any()

            assert wait_until(seen_again, 10)
        code = trace.stop()
    finally:
        if trace is not None:
            trace.kill()
    assert_exit(trace, code, 0)
    assert meta(capture)["complete"] is True
    assert_no_tmp(capture)
    assert INCOMPLETE not in analyzed_flags(capture)
    assert_detached(before, trace)


# ---- signals ------------------------------------------------------------------------------
@contextmanager
def _tracing_a_write_loop(tmp_path: Path, capture: Path) -> Iterator[Trace]:
    """``fusewb trace`` on a fresh fixture into ``capture``, after half a second of WRITEs;
    the tracer is killed (if still running) and the fixture unmounted on the way out."""
    with mounted(tmp_path / "mnt", writeback_cache=False) as fx:
        trace = Trace(["--all-requests", "--mount", fx.mountpoint, "-o", str(capture)],
                      tmp_path / "stdout")
        try:
            trace.require_ready()
            finish(load(WRITE_LOOP, f"{fx.mountpoint}/w.dat", 0.5))
            yield trace
        finally:
            trace.kill()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_stop_signal_gives_a_whole_capture_and_exit_0(tmp_path, sig: signal.Signals) -> None:
    before = _prepare()
    capture = tmp_path / "cap"
    with _tracing_a_write_loop(tmp_path, capture) as trace:
        code = trace.stop(sig)
    assert_exit(trace, code, 0)
    assert f"stopped by {sig.name}" in trace.lines
    assert meta(capture)["complete"] is True
    assert_no_tmp(capture)
    assert (read_table(capture, "requests").opcode_name == "WRITE").any()
    assert INCOMPLETE not in analyzed_flags(capture)
    assert_detached(before, trace)


def test_sighup_ignored_by_nohup_keeps_tracing(tmp_path) -> None:
    """Started under nohup, the tracer keeps SIGHUP ignored: it survives the hang-up it was
    started to survive, and SIGTERM still stops it."""
    before = _prepare()
    require(shutil.which("nohup") is not None, "needs nohup (coreutils)")
    capture = tmp_path / "cap"
    trace = Trace(["-o", str(capture)], tmp_path / "stdout", wrapper=("nohup",))
    try:
        trace.require_ready()
        trace.proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)  # a poll and a flush later
        assert trace.proc.poll() is None, trace.stderr
        code = trace.stop()
    finally:
        trace.kill()
    assert_exit(trace, code, 0)
    assert "stopped by SIGTERM" in trace.lines
    assert meta(capture)["complete"] is True
    assert_no_tmp(capture)
    assert INCOMPLETE not in analyzed_flags(capture)
    assert_detached(before, trace)


def read_terminal(fd: int, marker: bytes | None, timeout: float) -> bytes:
    """What a pty's master ``fd`` shows until ``marker`` appears (never, for None), every
    writer closed the terminal, or ``timeout`` passed."""
    seen = b""
    deadline = time.monotonic() + timeout
    while (marker is None or marker not in seen) and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_terminal_hangup_stops_cleanly_with_output_gone(tmp_path) -> None:
    """The tracer's terminal goes away (ssh dropped): SIGHUP, and every later write to the
    terminal fails with EIO; the tracer still stops cleanly and exits 0."""
    before = _prepare()
    require(shutil.which("setsid") is not None, "needs setsid (util-linux)")
    capture = tmp_path / "cap"
    master, slave = os.openpty()
    try:  # setsid -c: a new session whose controlling terminal is the pty (no fork)
        proc = subprocess.Popen([*SIGHUP_DEFAULT, "setsid", "-c", *FUSEWB, "trace",
                                 "-o", str(capture)],
                                stdin=slave, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    try:
        shown = read_terminal(master, b"Ctrl-C to stop", READY_S)
        assert b"tracing " in shown, shown[-2000:]
        held = programs_held_by(proc.pid)
        os.close(master)  # hang up
        master = -1
        code = proc.wait(EXIT_S)
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(EXIT_S)
    assert code == 0
    assert meta(capture)["complete"] is True
    assert_no_tmp(capture)
    assert INCOMPLETE not in analyzed_flags(capture)
    assert_programs_gone(before, held)


def test_sigkill_leaves_a_capture_that_analyses(tmp_path) -> None:
    """SIGKILL cannot be caught: renamed parts and meta.json read back, and temporary files
    of a write cut short (planted here as a truncated part and meta.json) are ignored."""
    before = _prepare()
    capture = tmp_path / "cap"
    with _tracing_a_write_loop(tmp_path, capture) as trace:
        assert wait_until(lambda: any((capture / "requests").glob("part-*.parquet")), 10)
        code = trace.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    part = sorted((capture / "requests").glob("part-*.parquet"))[-1]
    (capture / "requests" / ".part-999999.parquet.tmp").write_bytes(part.read_bytes()[:100])
    (capture / ".meta.json.tmp").write_text('{"schema_version": 1, "comp')
    assert meta(capture)["complete"] is False
    assert (pd.read_parquet(capture / "requests").opcode_name == "WRITE").any()
    assert INCOMPLETE in analyzed_flags(capture)
    assert_detached(before, trace)


# ---- two tracers --------------------------------------------------------------------------
def test_two_tracers_with_separate_captures_both_work(tmp_path) -> None:
    before = _prepare()
    captures = [tmp_path / "cap1", tmp_path / "cap2"]
    with mounted(tmp_path / "mnt", writeback_cache=False) as fx:
        traces = [Trace(["--all-requests", "--mount", fx.mountpoint, "-o", str(c)],
                        tmp_path / f"stdout{i}")
                  for i, c in enumerate(captures)]
        try:
            for trace in traces:
                trace.require_ready()
            finish(load(WRITE_LOOP, f"{fx.mountpoint}/t.dat", 0.5))
            codes = [trace.stop() for trace in traces]
        finally:
            for trace in traces:
                trace.kill()
    for trace, code, capture in zip(traces, codes, captures):
        assert_exit(trace, code, 0)
        assert meta(capture)["complete"] is True
        assert_no_tmp(capture)
        assert (read_table(capture, "requests").opcode_name == "WRITE").any()
        assert INCOMPLETE not in analyzed_flags(capture)
    assert_detached(before, *traces)


def test_two_tracers_on_one_capture_directory_one_refuses(tmp_path) -> None:
    """Started together on the same -o: one traces, the other refuses in one line."""
    before = _prepare()
    capture = tmp_path / "cap"
    traces = [Trace(["--all-requests", "-o", str(capture)], tmp_path / f"stdout{i}")
              for i in range(2)]
    try:
        assert wait_until(lambda: any(t.started.is_set() for t in traces)
                          and any(t.proc.poll() is not None for t in traces), READY_S), \
            [t.stderr for t in traces]
        loser = next(t for t in traces if t.proc.poll() is not None)
        winner = next(t for t in traces if t is not loser)
        assert winner.ready()
        lost_code = loser.wait()
        won_code = winner.stop()
    finally:
        for trace in traces:
            trace.kill()
    assert_exit(loser, lost_code, 2)
    assert ("another fusewb trace is writing a capture to" in loser.lines[-1]
            or "already holds a capture" in loser.lines[-1]), loser.lines[-1]
    assert_exit(winner, won_code, 0)
    assert meta(capture)["complete"] is True
    assert_no_tmp(capture)
    assert INCOMPLETE not in analyzed_flags(capture)
    assert_detached(before, *traces)
