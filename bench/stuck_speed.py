"""Part 5, ``fusewb stuck`` on a busy machine: how long the snapshot takes with thousands of
tasks, against the issue's 2 s.

The load: helper processes holding thousands of threads asleep (``S``, futex waits: every one
of them has its kernel stack read, the cost that grows with the machine), hundreds of idle
processes (every process's descriptors are listed to find ``/dev/fuse`` holders), and a stalled
fixture with a few writers asleep in ``fuse_fsync`` (``D``: each is resolved to its mount and
timed). Measured as the command a user runs (``fusewb stuck --json``, Python start-up included)
and as the in-process ``snapshot()``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from fusewb.fixtures.faults import Faults
from fusewb.fixtures.manage import mount_fixture

from bench.stats import PartResult, Row, Spread
from bench.system import Settings

__all__ = ["run", "TARGET_SECONDS"]

TARGET_SECONDS = 2.0
THREADS = {"full": (20, 250), "quick": (8, 250)}  # processes x threads each
IDLE_PROCESSES = {"full": 500, "quick": 200}
WRITERS = 8
SLEEPER = """
import sys, threading
threading.stack_size(65536)
stop = threading.Event()
for _ in range(int(sys.argv[1])):
    threading.Thread(target=stop.wait, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""
FSYNC = """
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY)
os.write(fd, b"b" * 65536)
os.fsync(fd)
"""


@contextmanager
def _processes(commands: list[list[str]], ready: bool) -> Iterator[list[subprocess.Popen]]:
    """Start ``commands``; with ``ready`` wait for each to print a line. Killed on exit."""
    started: list[subprocess.Popen] = []
    try:
        for command in commands:
            started.append(subprocess.Popen(command, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE if ready else None, text=True))
        if ready:
            for process in started:
                process.stdout.readline()
        yield started
    finally:
        for process in started:
            process.kill()
        for process in started:
            process.wait(timeout=30)


def _asleep_in_fsync(pid: int) -> bool:
    try:
        return "fuse_fsync" in open(f"/proc/{pid}/stack").read()
    except OSError:
        return False


def _timed_cli() -> tuple[float, dict]:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fusewb.cli", "stuck", "--json"],
                          capture_output=True, text=True, timeout=120, check=True)
    return time.perf_counter() - began, json.loads(done.stdout)


def run(settings: Settings, progress: Callable[[str], None]) -> PartResult:
    """Snapshot time under thousands of sleeping threads, idle processes and stuck writers."""
    from fusewb.stuck import snapshot  # noqa: PLC0415

    size = "quick" if settings.quick else "full"
    holders, per_holder = THREADS[size]
    result = PartResult("stuck")
    mnt = settings.scratch("stuck-mnt")
    cli_s: list[float] = []
    api_s: list[float] = []
    with ExitStack() as stack:
        stack.enter_context(_processes(
            [[sys.executable, "-c", SLEEPER, str(per_holder)]] * holders, ready=True))
        stack.enter_context(_processes([["sleep", "3600"]] * IDLE_PROCESSES[size], ready=False))
        fixture = stack.enter_context(mount_fixture(mnt, Faults(stall=True)))
        writers = stack.enter_context(_processes(
            [[sys.executable, "-c", FSYNC, str(mnt / f"w{i}")] for i in range(WRITERS)],
            ready=False))
        stack.callback(fixture.release)  # runs before the writers are killed
        deadline = time.monotonic() + 30
        while not all(_asleep_in_fsync(w.pid) for w in writers):
            if time.monotonic() > deadline:
                raise RuntimeError("the bench's writers never slept in fuse_fsync")
            time.sleep(0.05)
        with open("/proc/loadavg") as loadavg:
            tasks = int(loadavg.read().split()[3].split("/")[1])
        progress(f"stuck: {tasks} tasks on the machine ({holders} x {per_holder} sleeping "
                 f"threads, {IDLE_PROCESSES[size]} idle processes, {WRITERS} stuck writers)")
        found = 0
        for rep in range(settings.repetitions):
            seconds, snap = _timed_cli()
            cli_s.append(seconds)
            found = sum(1 for t in snap["tasks"] if t["path"] == "fsync")
            began = time.perf_counter()
            snapshot()
            api_s.append(time.perf_counter() - began)
            progress(f"stuck: repetition {rep + 1}/{settings.repetitions}: CLI {seconds:.2f} s")
    case = f"{tasks} tasks"
    for variant, values in (("fusewb stuck --json", cli_s), ("snapshot() in process", api_s)):
        spread = Spread.of(values)
        result.rows.append(Row(
            part="stuck", case=case, variant=variant, unit="s", value=spread,
            ratio=Spread.of([v / TARGET_SECONDS for v in values]),
            ratio_to=f"{TARGET_SECONDS:g} s", target=f"< {TARGET_SECONDS:g} s",
            met=spread.median < TARGET_SECONDS))
    result.notes.append(
        f"Method: {holders} processes holding {per_holder} sleeping threads each, "
        f"{IDLE_PROCESSES[size]} idle `sleep` processes, and {WRITERS} writers asleep in "
        f"fuse_fsync behind a stalled fixture ({found} of them reported by the last run); "
        f"{tasks} tasks on the machine in all. The CLI time includes Python's start-up.")
    return result
