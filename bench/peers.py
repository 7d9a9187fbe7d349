"""Tracers run beside a workload, each in its own process, started and confirmed attached
before the workload begins: ``fusewb trace``, ``perf record``, ``bpftrace``, and the bench's own
tracer runner (:mod:`bench.tracer_proc`, the Python API with options the CLI does not offer).

Attachment is confirmed from outside the tracer where possible: the ``tracing`` line of
``fusewb trace``, BPF programs of the process in ``bpftool perf show``, perf event descriptors
in ``/proc/PID/fd``. What each BPF program of a tracer costs in the kernel: run counts and run
time from ``bpftool prog show`` while ``kernel.bpf_stats_enabled`` is 1 (:func:`bpf_stats_enabled`,
:func:`bpf_run_stats`, :func:`bpf_run_deltas`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fusewb.contract.errors import FusewbError

from bench.system import bench_env

__all__ = ["TracerProcess", "cpu_seconds_of", "fusewb_trace", "perf_record", "bpftrace", "bench_tracer",
           "bpf_programs_of", "bpf_run_stats", "bpf_run_deltas", "bpf_stats_enabled",
           "FOLIO_WAIT_BT", "FUSE_REQUESTS_BT"]

FOLIO_WAIT_BT = Path(__file__).resolve().parent / "folio_wait.bt"
FUSE_REQUESTS_BT = Path(__file__).resolve().parent / "fuse_requests.bt"
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
FUSEWB = Path(sys.executable).parent / "fusewb"
ATTACH_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads); 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class TracerProcess:
    """A tracer in a subprocess: stderr drained in a thread, stopped with SIGINT, bounded."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.stderr_lines: list[str] = []
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, start_new_session=True,
        )
        self.stdout = ""
        self._out_thread = threading.Thread(target=self._read_stdout, daemon=True)
        self._err_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._out_thread.start()
        self._err_thread.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        self.stdout = self.process.stdout.read()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_until(self, attached: Callable[[], bool], timeout: float = ATTACH_TIMEOUT) -> None:
        """Return once ``attached()`` holds; FusewbError if the tracer exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._err_thread.join(2.0)
                tail = " | ".join(self.stderr_lines[-3:]) or "no output"
                raise FusewbError(f"{self.name} exited with {self.process.returncode} before "
                                  f"attaching ({tail})", "run the same command by hand to see why")
            if attached():
                return
            time.sleep(0.05)
        self.stop()
        raise FusewbError(f"{self.name} did not attach within {timeout:g} s",
                          "check that tracefs is mounted and BPF works (fusewb doctor)")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (all its threads)."""
        return cpu_seconds_of(self.pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGINT, then SIGKILL after ``timeout``; the exit code."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._out_thread.join(10)
        self._err_thread.join(10)
        return self.process.returncode


def bpf_programs_of(pid: int) -> list[dict]:
    """The BPF programs ``pid`` has attached (``bpftool perf show``): prog_id, tracepoint..."""
    try:
        out = subprocess.run(["bpftool", "perf", "show", "--json"], capture_output=True,
                             text=True, timeout=10, check=False)
        entries = json.loads(out.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return []
    return [e for e in entries if e.get("pid") == pid]


def bpf_run_stats(pid: int) -> dict[str, tuple[int, int]]:
    """tracepoint -> (run_cnt, run_time_ns) summed over the BPF programs ``pid`` attached
    (non-zero only while ``kernel.bpf_stats_enabled`` is 1)."""
    out: dict[str, tuple[int, int]] = {}
    for entry in bpf_programs_of(pid):
        shown = subprocess.run(["bpftool", "prog", "show", "id", str(entry["prog_id"]), "--json"],
                               capture_output=True, text=True, timeout=10, check=False)
        try:
            prog = json.loads(shown.stdout)
        except json.JSONDecodeError:
            continue
        name = entry.get("tracepoint") or prog.get("name", "?")
        cnt, ns = out.get(name, (0, 0))
        out[name] = (cnt + prog.get("run_cnt", 0), ns + prog.get("run_time_ns", 0))
    return out


def bpf_run_deltas(before: dict[str, tuple[int, int]],
                   after: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """tracepoint -> (runs, run time ns) between two :func:`bpf_run_stats` readings."""
    return {name: (cnt - before.get(name, (0, 0))[0], ns - before.get(name, (0, 0))[1])
            for name, (cnt, ns) in after.items()}


@contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """``kernel.bpf_stats_enabled`` set to 1 for the block, its previous value restored after
    (also when the block raises)."""
    before = BPF_STATS.read_text().strip()
    BPF_STATS.write_text("1")
    try:
        yield
    finally:
        BPF_STATS.write_text(before)


def _perf_event_fds(pid: int) -> int:
    count = 0
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(fd.path) == "anon_inode:[perf_event]":
                    count += 1
            except OSError:
                continue
    except OSError:
        return 0
    return count


def fusewb_trace(mountpoint: str, capture: Path, *options: str) -> TracerProcess:
    """``fusewb trace --mount MOUNT -o CAPTURE [OPTIONS...]``, attached (its ``tracing`` line
    seen)."""
    tracer = TracerProcess("fusewb trace", [str(FUSEWB), "trace", "--mount", mountpoint,
                                            "-o", str(capture), *options])
    tracer.wait_until(lambda: any(line.startswith("tracing ") for line in tracer.stderr_lines))
    return tracer


def perf_record(output: Path) -> TracerProcess:
    """``perf record -e writeback:folio_wait_writeback -g -a``, attached (one event per CPU)."""
    tracer = TracerProcess("perf record", ["perf", "record", "-e", "writeback:folio_wait_writeback",
                                           "-g", "-a", "-o", str(output)])
    cpus = os.cpu_count() or 1
    tracer.wait_until(lambda: _perf_event_fds(tracer.pid) >= cpus)
    return tracer


def bpftrace(argument: str, script: Path = FOLIO_WAIT_BT) -> TracerProcess:
    """bpftrace running ``script`` with ``argument`` as $1 (folio_wait.bt: the FUSE bdi;
    fuse_requests.bt: the connection), attached (every probe in bpftool)."""
    probes = sum(1 for line in script.read_text().splitlines()
                 if line.startswith(("tracepoint:", "rawtracepoint:")))
    tracer = TracerProcess("bpftrace", ["bpftrace", str(script), argument])
    tracer.wait_until(lambda: len(bpf_programs_of(tracer.pid)) >= probes)
    return tracer


def bench_tracer(mountpoint: str, capture: Path, ring_pages: int,
                 all_requests: bool = True) -> TracerProcess:
    """:mod:`bench.tracer_proc` (fusewb's Tracer with bench options), attached; with
    ``all_requests`` every FUSE request is a row (else only those over the threshold)."""
    tracer = TracerProcess(
        "fusewb tracer (bench runner)",
        [sys.executable, "-m", "bench.tracer_proc", "--mount", mountpoint, "-o", str(capture),
         "--ring-pages", str(ring_pages), "--all-requests" if all_requests else "--slow-requests"],
        env=bench_env(),
    )
    tracer.wait_until(lambda: any(line.startswith("tracing ") for line in tracer.stderr_lines))
    return tracer

