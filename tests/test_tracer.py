"""``fusewb trace`` end to end on the real kernel, with the fixture filesystem: waits under
fuse_fsync and migrate_pages, a stalled server's ongoing wait and WRITE, the FUSE-only filter,
lost events on a tiny ring, a kill -9 capture that reads back, and nothing left attached."""

from __future__ import annotations

import json
import os
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

from tests.support import require, require_bpf, require_fuse


FUSEWB = [sys.executable, "-m", "fusewb.cli"]

# Loads, run as child processes so a load stuck behind a stalled server can be released/killed.
MSYNC_LOAD = """
import mmap, os, sys
path, mib = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, mib << 20)
area = mmap.mmap(fd, mib << 20)
for off in range(0, mib << 20, 4096):
    area[off] = 0x62
area.flush()  # msync(MS_SYNC)
area.close()
os.close(fd)
"""
WRITE_FSYNC_LOAD = """
import os, sys
path, mib, block = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
chunk = b"w" * block
for i in range((mib << 20) // block):
    os.write(fd, chunk)
os.fsync(fd)
os.close(fd)
os.unlink(path)
"""


def _prepare() -> None:
    require_bpf()
    require_fuse()
    require(shutil.which("bpftool") is not None, "needs bpftool (Debian bpftool)")


def loaded_program_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return {p["id"] for p in json.loads(out)}


def programs_held_by(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds open (``prog_id`` in /proc/PID/fdinfo)."""
    ids = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


@contextmanager
def fixture(tmp_path: Path, name: str = "mnt", writeback_cache: bool = True, **faults) -> Iterator:
    from fusewb.fixtures.faults import Faults
    from fusewb.fixtures.manage import mount_fixture

    fx = mount_fixture(tmp_path / name, Faults(**faults), writeback_cache=writeback_cache)
    try:
        yield fx
    finally:
        try:
            fx.release()
        except Exception:  # noqa: BLE001 - the server may be gone already; unmount anyway
            pass
        fx.unmount()


@contextmanager
def tracing(output: Path, mount: str, **options) -> Iterator:
    """A Tracer on ``mount`` running in the background; always stopped (and detached)."""
    from fusewb.tracers.session import TraceOptions, Tracer

    tracer = Tracer(TraceOptions(output=output, mounts=[mount], **options))
    tracer.start_background()
    try:
        yield tracer
    finally:
        tracer.stop()


def load(script: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 60) -> None:
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    assert proc.returncode == 0, err[-2000:]


REQUEST_PROBES = ("fuse_request_send", "fuse_request_end", "queue_request_and_unlock")


def skipped_request_runs(meta: dict) -> int:
    """Runs of the request probes that the kernel skipped (its recursion guard; ``counters``
    ``missed.<program>`` of meta.json): requests no capture can hold, which a test allows for
    exactly and no more."""
    from fusewb.contract.meta import missed_by_program

    return sum(runs for name, runs in missed_by_program(meta["counters"]).items()
               if any(probe in name for probe in REQUEST_PROBES))


def read_table(capture: Path, table: str) -> pd.DataFrame:
    parts = sorted((capture / table).glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def waits_with_frames(capture: Path) -> pd.DataFrame:
    waits, stacks = read_table(capture, "waits"), read_table(capture, "stacks")
    if waits.empty:
        return waits
    frames = {} if stacks.empty else dict(zip(stacks.stack_id, stacks.frames))
    return waits.assign(frames=[list(frames.get(s, [])) for s in waits.stack_id])


def test_msync_waits_under_fuse_fsync_and_filter_and_detach(tmp_path) -> None:
    """msync with a 300 ms server: waits in fuse_fsync, requests, server thread; concurrent
    ext4 writeback waits are filtered out; no program stays attached afterwards."""
    _prepare()
    capture = tmp_path / "cap"
    lines: list[str] = []
    with fixture(tmp_path, latency_ms=300) as fx:
        with tracing(capture, fx.mountpoint, live=lines.append, threshold_ms=100) as tracer:
            attached = programs_held_by(os.getpid())
            assert attached <= loaded_program_ids()
            assert len(attached) >= len(tracer.plan.tracepoints) + len(tracer.plan.raw_tracepoints)
            other = load(WRITE_FSYNC_LOAD, f"/var/tmp/fusewb-test-{os.getpid()}", 64, 1 << 20)
            msync = load(MSYNC_LOAD, f"{fx.mountpoint}/msync.dat", 4)
            finish(msync)
            finish(other)
            # the probe runs the kernel skipped, per program, as bpftool reads them
            from fusewb.tracers.kernel_state import missed_runs

            missed = missed_runs(tracer.bpf)
            shown = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                                              text=True, timeout=30, check=True).stdout)
            assert not missed or set(missed) == {name.decode() for name in tracer.bpf.funcs}
            assert sum(missed.values()) <= sum(p.get("recursion_misses", 0) for p in shown if p["id"] in attached)
        bdi = fx.mount.bdi
        server_pid = fx.pid
    assert not loaded_program_ids() & attached, "BPF programs still loaded after stop"

    waits = waits_with_frames(capture)
    meta = json.loads((capture / "meta.json").read_text())
    assert meta["complete"] and meta["plan"] in ("tracepoint", "kprobe")
    fsync_waits = waits[[("fuse_fsync" in f) for f in waits.frames]]
    assert not fsync_waits.empty, waits
    assert fsync_waits.duration_ns.max() >= 150e6  # the server answers each WRITE after 300 ms
    assert set(waits.bdi) == {bdi}  # nothing from ext4 (/var/tmp) or other FUSE mounts
    assert meta["counters"]["wait_tp_other"] > 0  # ext4 waits happened and were filtered
    assert any("fuse_fsync" in line for line in lines)

    requests = read_table(capture, "requests")
    writes = requests[requests.opcode_name == "WRITE"]
    assert not writes.empty and not writes.ongoing.any()
    assert writes.duration_ns.min() >= 250e6
    assert "FSYNC" not in set(requests.opcode_name)  # answered at once: below the row threshold
    counted = {h["opcode_name"]: h["count"] for h in meta["histograms"]["requests"]}
    assert counted["FSYNC"] >= 1 and counted["WRITE"] >= len(writes)  # every one in the histograms
    assert server_pid in {s["tgid"] for s in meta["server_threads"]}
    assert meta["lost_events"]["total"] == 0
    assert meta["counters"]["user_event_errors"] == 0 and meta["first_event_error"] is None


def test_stalled_server_yields_ongoing_wait_and_write(tmp_path) -> None:
    _prepare()
    capture = tmp_path / "cap"
    lines: list[str] = []
    writer = early = None
    with fixture(tmp_path, stall=True) as fx:
        try:
            # Asleep before tracing starts: its tracepoint is missed; /proc shows it at the end.
            early = load(MSYNC_LOAD, f"{fx.mountpoint}/early.dat", 1)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "folio_wait_writeback" not in _kernel_stack(early.pid):
                time.sleep(0.1)
            with tracing(capture, fx.mountpoint, live=lines.append) as tracer:
                # Started after attach: a wait that began before tracing is not seen.
                writer = load(MSYNC_LOAD, f"{fx.mountpoint}/stalled.dat", 1)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not any("(ongoing)" in l for l in lines):
                    time.sleep(0.2)
                summary = tracer.stop()
        finally:
            fx.release()
            for proc in (writer, early):
                if proc is not None:
                    finish(proc)
    assert summary.ongoing_waits >= 1 and summary.ongoing_requests >= 1
    assert early.pid in {t["pid"] for t in summary.unseen_waiters}
    assert early.pid not in set(read_table(capture, "waits").pid)
    waits = waits_with_frames(capture)
    ongoing = waits[waits.ongoing]
    assert not ongoing.empty
    assert ongoing.duration_ns.max() >= 50e6
    assert any("fuse_fsync" in f for f in ongoing.frames)
    requests = read_table(capture, "requests")
    stuck = requests[requests.ongoing & (requests.opcode_name == "WRITE")]
    assert not stuck.empty and stuck.end_ts_ns.isna().all() and stuck.error.isna().all()
    assert any("(ongoing)" in line for line in lines)


def test_pid_filter_keeps_only_that_process(tmp_path) -> None:
    _prepare()
    capture = tmp_path / "cap"
    gated = "import sys; sys.stdin.readline()\n" + MSYNC_LOAD
    with fixture(tmp_path, latency_ms=100) as fx:
        chosen = subprocess.Popen([sys.executable, "-c", gated, f"{fx.mountpoint}/a.dat", "2"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        other = subprocess.Popen([sys.executable, "-c", gated, f"{fx.mountpoint}/b.dat", "2"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            with tracing(capture, fx.mountpoint, pid=chosen.pid):
                chosen.stdin.write("go\n")
                other.stdin.write("go\n")
                chosen.stdin.flush()
                other.stdin.flush()
                finish(chosen)
                finish(other)
        finally:
            for proc in (chosen, other):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
    waits = read_table(capture, "waits")
    assert not waits.empty
    assert set(waits.tgid) == {chosen.pid}
    assert json.loads((capture / "meta.json").read_text())["filter"]["pid"] == chosen.pid


def _kernel_stack(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stack").read_text()
    except OSError:
        return ""


def test_hot_unplug_waits_in_migrate_pages(tmp_path) -> None:
    """Folios under a held FUSE writeback in a memory block that is then offlined: the wait's
    stack holds offline_pages and migrate_pages, and the vm table the migration."""
    _prepare()
    from fusewb.fixtures.loads import LOADS

    require(Path("/sys/devices/system/memory/block_size_bytes").exists(),
            "needs memory hotplug (CONFIG_MEMORY_HOTREMOVE)")
    capture = tmp_path / "cap"
    with fixture(tmp_path) as fx:
        with tracing(capture, fx.mountpoint):
            result = LOADS["hot-unplug"](fx.mountpoint, size_mib=16, hold_s=1.5,
                                         echo=lambda _line: None)
    assert result.counters["movable_write_pending_pages"] > 0, result.summary()
    waits = waits_with_frames(capture)
    found = waits[[("migrate_pages" in f and "offline_pages" in f) for f in waits.frames]]
    assert not found.empty, waits.frames.tolist()[:3]
    # the server held the WRITEs for 1.5 s: the offline waited for most of that
    assert found.duration_ns.max() >= 1e9
    assert "migrate_pages" in set(read_table(capture, "vm").kind)


class TraceProcess:
    """``fusewb trace`` as a child process: stderr lines collected by a thread, stdout to a file."""

    def __init__(self, args: list[str], stdout: Path) -> None:
        self.stdout = stdout
        with open(stdout, "w") as out:
            self.proc = subprocess.Popen(FUSEWB + ["trace", *args], stdout=out,
                                         stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self.ready = threading.Event()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        if not self.ready.wait(60):
            self.kill()
            pytest.fail(f"fusewb trace did not start: {''.join(self.err)[-2000:]}")

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.err.append(line)
            if line.startswith("tracing "):
                self.ready.set()

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self.pump.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(30)


def test_tiny_ring_reports_lost_events_and_sigterm_exits_0(tmp_path) -> None:
    _prepare()
    capture = tmp_path / "cap"
    with fixture(tmp_path, writeback_cache=False) as fx:
        trace = TraceProcess(["--mount", fx.mountpoint, "--ring-pages", "1", "--all-requests",
                              "-o", str(capture)], tmp_path / "stdout")
        try:
            # Without writeback cache every write(2) is one WRITE request: thousands per second,
            # far more than a 4 KiB ring holds between two 100 ms drains.
            finish(load(WRITE_FSYNC_LOAD, f"{fx.mountpoint}/many.dat", 4, 512))
            time.sleep(0.5)
            trace.proc.send_signal(signal.SIGTERM)
            code = trace.wait(60)
        finally:
            trace.kill()
    err = trace.err
    assert code == 0, "".join(err)[-2000:]
    meta = json.loads((capture / "meta.json").read_text())
    assert meta["complete"] is True
    lost = meta["lost_events"]
    assert lost["total"] > 0 and lost["by_kind"]["request"] > 0
    assert sum(lost["per_cpu"]) == lost["total"]
    assert any(line.startswith(f"LOST {lost['total']} events") for line in err), err
    assert not read_table(capture, "requests").empty  # what fit in the ring was kept


def test_kill_9_capture_reads_back(tmp_path) -> None:
    """kill -9 mid-capture: every completed part reads back with plain pandas, meta.json too;
    the tracer was started before the mount appeared (the filter follows new mounts)."""
    _prepare()
    capture = tmp_path / "cap"
    # every FUSE mount, also later ones; every request a row (the WRITEs take 20 ms)
    trace = TraceProcess(["--all-requests", "-o", str(capture)], tmp_path / "stdout")
    proc = trace.proc
    try:
        attached = programs_held_by(proc.pid)
        with fixture(tmp_path, latency_ms=20) as fx:
            bdi = fx.mount.bdi
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and bdi not in {
                m["bdi"] for m in json.loads((capture / "meta.json").read_text())["mounts"]
            }:
                time.sleep(0.1)
            finish(load(WRITE_FSYNC_LOAD, f"{fx.mountpoint}/k.dat", 8, 1 << 20))
            time.sleep(2.5)  # at least one flush after the load
            proc.kill()
            trace.wait(30)
    finally:
        trace.kill()
    assert proc.returncode == -signal.SIGKILL
    meta = json.loads((capture / "meta.json").read_text())
    assert meta["complete"] is False and meta["probes"]
    assert bdi in {m["bdi"] for m in meta["mounts"]}
    requests = pd.read_parquet(capture / "requests")  # plain pandas, every completed part
    assert (requests[requests.bdi == bdi].opcode_name == "WRITE").any()
    for table in ("waits", "throttle", "vm", "stacks"):
        if list((capture / table).glob("part-*.parquet")):
            pd.read_parquet(capture / table)
    assert attached
    deadline = time.monotonic() + 10
    while loaded_program_ids() & attached and time.monotonic() < deadline:
        time.sleep(0.2)  # the kernel frees a killed tracer's programs once its files close
    assert not loaded_program_ids() & attached


def test_cli_errors_help_and_ebpf(tmp_path) -> None:
    require_bpf()
    run = lambda *a: subprocess.run(FUSEWB + ["trace", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=120)
    bad = run("--mount", str(tmp_path), "-o", str(tmp_path / "cap"))
    assert bad.returncode == 2
    assert "is not a FUSE mount" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    helped = run("--help")
    assert helped.returncode == 0 and "Examples:" in helped.stdout and "--ebpf" not in helped.stdout
    ebpf = run("--ebpf")
    assert ebpf.returncode == 0
    assert "TRACEPOINT_PROBE(writeback, folio_wait_writeback)" in ebpf.stdout
    assert "-DWAIT_TP=1" in ebpf.stdout


def test_duration_ends_the_trace_with_exit_0(tmp_path) -> None:
    require_bpf()
    capture = tmp_path / "cap"
    done = subprocess.run(FUSEWB + ["trace", "--duration", "1", "-o", str(capture)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "traced 1." in done.stderr and "lost events: 0" in done.stderr
    meta = json.loads((capture / "meta.json").read_text())
    assert meta["complete"] and meta["end_monotonic_ns"] > meta["start_monotonic_ns"]
    assert (meta["end_monotonic_ns"] - meta["start_monotonic_ns"]) / 1e9 >= 1.0
    assert oct(os.stat(capture).st_mode & 0o777) == "0o700"
