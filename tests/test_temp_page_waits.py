"""A fsync, a close and a write fault on a mapping (page_mkwrite) behind a FUSE server that
answers each WRITE after 3 s, traced and analysed on the running kernel: a wait of about 3 s on
each path with its kernel stack, and the WRITEs as STALLED_REQUEST. Before 6.16 (temp pages,
e.g. Debian 12's 6.1 in the guest stage of ``make test``) the task waits inside fuse.ko (``fuse_set_nowrite``, timed by kprobes) and the
requests come from kprobes keyed on the request pointer; on 6.16+ it waits in
``folio_wait_writeback`` and the requests come from the fuse:* tracepoints. The write fault
meets a page whose WRITE is in flight (started by sync_file_range): before 6.16 it waits in
``fuse_page_mkwrite -> fuse_wait_on_page_writeback``, from 6.16 in ``folio_wait_writeback``.
Last the server is stalled and tracing stops while a fsync's WRITE is unanswered: the capture
keeps that WRITE as ongoing, with its length. Then a close behind a single-threaded server that
holds its WRITE: with temp pages it waits for the SETATTR queued behind that WRITE
(``fuse_flush_times``), or the flusher does."""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusewb.analysis import flags, load_capture
from fusewb.fixtures.faults import Faults
from fusewb.scenarios import temp_pages
from fusewb.tracers.procscan import read_frames
from fusewb.fixtures.manage import Fixture
from tests.fixture_helpers import asleep_in, mounted, wait_until
from tests.support import TIMEOUT_SCALE, require_bpf
from tests.test_analysis_real import _stderr_lines, _wait_ready

LATENCY_MS = 3000


def _fsync_write(path: Path, _fx: Fixture) -> float:
    """Write 64 KiB through the page cache and fsync it: seconds the write and fsync took (the
    WRITE may leave before the fsync, never before the write)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        began = time.monotonic()
        os.write(fd, b"w" * 65536)
        os.fsync(fd)
        return time.monotonic() - began
    finally:
        os.close(fd)


def _close_write(path: Path, _fx: Fixture) -> float:
    """Write 64 KiB through the page cache and close: seconds the write and close took (the
    close waits in fuse_flush)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    began = time.monotonic()
    os.write(fd, b"c" * 65536)
    os.close(fd)
    return time.monotonic() - began

def _mkwrite_after_writeback(path: Path, fx: Fixture) -> float:
    """Dirty 64 KiB of a shared mapping, start its writeback without waiting
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``), then, once the server holds the WRITE, write
    to the first page again: seconds the write fault took (page_mkwrite waits for the WRITE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"m" * 65536)  # in the page cache without a READ from the server
        with mmap.mmap(fd, 65536, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mapping:
            mapping[:] = b"n" * 65536
            seen = fx.status()["writes"]["seen"]
            if libc.sync_file_range(fd, 0, 65536, 2) != 0:  # SYNC_FILE_RANGE_WRITE
                raise OSError(ctypes.get_errno(), "sync_file_range")
            assert wait_until(lambda: fx.status()["writes"]["seen"] > seen, timeout=LATENCY_MS / 1000), \
                f"the WRITE did not reach the server: {fx.status()['writes']}"
            began = time.monotonic()
            mapping[0:1] = b"o"  # write-protected since its writeback: page_mkwrite
            return time.monotonic() - began
    finally:
        os.close(fd)


# path -> (the action behind a slow WRITE, a frame its stack must hold, the least share of the
# latency it waits: the write fault comes after its WRITE has been in flight a while)
ACTIONS = {
    "fsync": (_fsync_write, "fuse_fsync", 0.9),
    "close": (_close_write, "fuse_flush", 0.9),
    "page_mkwrite": (_mkwrite_after_writeback, "fuse_page_mkwrite", 0.4),
}


FSYNC_64K = """
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY)
os.write(fd, b"s" * 65536)
os.fsync(fd)
"""
# uapi/linux/fuse.h: what a WRITE carries besides its data
FUSE_IN_HEADER_BYTES, FUSE_WRITE_IN_BYTES = 40, 40


@contextlib.contextmanager
def _tracing(mnt: Path, cap: Path) -> Iterator[subprocess.Popen]:
    """``fusewb trace`` of ``mnt`` into ``cap``, ready when the block begins; the block stops it
    with :func:`_stop`, and it is killed afterwards if it still runs."""
    tracer = subprocess.Popen(
        [sys.executable, "-m", "fusewb.cli", "trace", "--mount", str(mnt),
         "-o", str(cap)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    pump = None
    try:
        lines, pump = _stderr_lines(tracer)
        _wait_ready(lines, tracer)
        yield tracer
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.wait(timeout=30)
        if pump is not None:
            pump.join(timeout=10)
        tracer.stderr.close()


def _stop(tracer: subprocess.Popen) -> None:
    """Stop tracing as a user does (SIGINT): the capture is kept whole."""
    tracer.send_signal(signal.SIGINT)
    assert tracer.wait(timeout=120 * TIMEOUT_SCALE) == 0


def _trace_actions(fx: Fixture, cap: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Trace the mount while each action runs on its own file, then stall the server and stop
    tracing while a fsync's WRITE is unanswered: seconds each action took, and its file's inode
    (the same task also waits on other files: the mkwrite file's close flushes it again)."""
    mnt = Path(fx.mountpoint)
    with _tracing(mnt, cap) as tracer:
        child = None
        try:
            took = {path: action(mnt / f"{path}.bin", fx) for path, (action, _frame, _least) in ACTIONS.items()}
            inodes = {path: os.stat(mnt / f"{path}.bin").st_ino for path in ACTIONS}
            fx.stall()
            child = subprocess.Popen([sys.executable, "-c", FSYNC_64K, str(mnt / "unanswered.bin")])
            # asleep in fsync's wait: every WRITE of its range has been queued by then
            assert wait_until(lambda: asleep_in(child.pid, "fuse_fsync"), timeout=30), \
                read_frames(child.pid, child.pid)
            _stop(tracer)
            return took, inodes
        finally:
            fx.release()
            if child is not None:
                assert child.wait(timeout=30 * TIMEOUT_SCALE) == 0


@pytest.mark.timeout(150 * TIMEOUT_SCALE)
def test_fsync_close_and_mkwrite_behind_slow_writes_are_waits_and_stalled_writes(tmp_path: Path) -> None:
    require_bpf()
    mnt, cap = tmp_path / "mnt", tmp_path / "cap"
    with mounted(mnt, Faults(latency_ms=LATENCY_MS)) as fx:
        # a new FUSE bdi's strictlimit share is near zero: the 64 KiB writes would start
        # writeback early and make untimed waits of their own on the same files
        fx.reserve_dirty_share(10)
        took, inodes = _trace_actions(fx, cap)
    for path, seconds in took.items():
        assert seconds >= LATENCY_MS / 1000 * ACTIONS[path][2], f"the {path} took {seconds:.2f} s: the server's latency was not applied"
    result = subprocess.run([sys.executable, "-m", "fusewb.cli", "analyze", str(cap), "--format", "json"],
                            capture_output=True, text=True, timeout=300 * TIMEOUT_SCALE)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    kernel = platform.release()
    blocked = [f for f in report["flags"] if f["flag"] == "BLOCKED_WAIT" and f["pid"] == os.getpid()]
    for path, seconds in took.items():
        waits = [f for f in blocked if f["path"] == path and f["ino"] == inodes[path]]
        assert waits, f"{kernel}: no BLOCKED_WAIT on the {path} path ({seconds:.2f} s); flags {blocked}"
        assert ACTIONS[path][2] * LATENCY_MS <= waits[0]["duration_ms"] <= seconds * 1000 + 50, (kernel, seconds, waits)
        stack = waits[0]["evidence"]  # "1 wait, worst N ms at T: frame < caller < ..."
        assert ACTIONS[path][1] in stack, (kernel, stack)
        if temp_pages():
            # the temp-page era's waits: inside fuse.ko, not in folio_wait_writeback
            inside = "fuse_wait_on_page_writeback" if path == "page_mkwrite" else "fuse_set_nowrite"
            assert inside in stack, (kernel, stack)
    stalled = [f for f in report["flags"] if f["flag"] == "STALLED_REQUEST"]
    assert stalled and stalled[0]["mount"] == str(mnt), (kernel, report["flag_counts"])
    assert "WRITE" in json.dumps(stalled[0]["evidence"]), stalled[0]
    # the WRITE still stalled when tracing stopped: ongoing, with the length it has on the wire
    # (header, fuse_write_in, the 64 KiB written); before 6.18 the kernel assigns in.h.len after
    # the send is seen, so the tracer adds it up from the request's arguments
    requests = load_capture(cap).table("requests")
    unanswered = requests[(requests["opcode_name"] == "WRITE") & requests["ongoing"]]
    assert len(unanswered) >= 1, requests[["opcode_name", "ongoing", "len"]].to_string()
    data = unanswered["len"] - FUSE_IN_HEADER_BYTES - FUSE_WRITE_IN_BYTES
    assert (data > 0).all() and data.sum() == 65536, (kernel, unanswered["len"].tolist())


CLOSE_4K = """
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY)
os.write(fd, b"c" * 4096)
os.close(fd)
"""
HOLD_S = 2.0


@pytest.mark.timeout(150 * TIMEOUT_SCALE)
def test_close_behind_a_single_threaded_server_holding_its_write_is_a_wait(tmp_path: Path) -> None:
    """A close whose WRITE a single-threaded server holds for 2 s is a timed wait of about 2 s.

    From 6.16 the close waits for the WRITE's writeback (``folio_wait_writeback``). With temp
    pages the writeback ends at once and write_inode_now sends the inode's times, a SETATTR the
    server reads only after the WRITE: the close waits in ``fuse_flush_times``. Or the flusher
    (woken by dirty throttling) took the inode first and sends that SETATTR itself: the close
    waits for the flusher (``inode_wait_for_writeback``), and the flusher's wait is timed where
    the plan probes ``fuse_flush_times`` (path ``flusher``); elsewhere neither is a wait the
    tracer times, and the capture shows the held WRITE and SETATTR. The close's stack at the end
    of the hold, read here from /proc, tells which."""
    require_bpf()
    mnt, cap = tmp_path / "mnt", tmp_path / "cap"
    with mounted(mnt, Faults(stall=True), single_threaded=True) as fx, _tracing(mnt, cap) as tracer:
        child = subprocess.Popen([sys.executable, "-c", CLOSE_4K, str(mnt / "c")])
        try:
            assert wait_until(lambda: asleep_in(child.pid, "fuse_flush", "DS"), timeout=30), \
                read_frames(child.pid, child.pid)
            time.sleep(HOLD_S)
            close_stack = read_frames(child.pid, child.pid) or []  # its wait by now, whichever
        finally:
            fx.release()
            try:
                child.wait(timeout=30 * TIMEOUT_SCALE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=30)
        assert child.returncode == 0
        _stop(tracer)
        bdi = fx.mount.bdi
    capture = load_capture(cap)  # analysed in this process: a second Python start costs ~30 s under TCG
    raised = flags(capture)
    kernel = platform.release()
    least_ms = 0.9 * HOLD_S * 1000
    held = raised[(raised["flag"] == "BLOCKED_WAIT") & (raised["bdi"].astype(object) == bdi)
                  & (raised["duration_ms"] >= least_ms)]
    seen = (kernel, close_stack, raised[["flag", "path", "pid", "bdi", "duration_ms"]].to_string())
    probed = "kprobe:fuse_flush_times" in capture.meta["probes"]
    own_wait = [w for w in ("fuse_flush_times", "folio_wait_writeback", "wait_on_page_writeback")
                if any(w in frame for frame in close_stack)]
    if own_wait:
        waits = held[(held["path"].astype(object) == "close") & (held["pid"] == child.pid)]
    elif probed:
        waits = held[held["path"].astype(object) == "flusher"]
    else:
        requests = capture.table("requests")
        slow = requests[requests["duration_ns"] >= least_ms * 1e6]
        assert {"WRITE", "SETATTR"} <= set(slow["opcode_name"].astype(object)), \
            (seen, requests[["opcode_name", "duration_ns"]].to_string())
        return
    assert len(waits), seen
    worst = waits.iloc[0]
    assert not worst["ongoing"], worst.to_dict()
    if probed and (not own_wait or "fuse_flush_times" in own_wait):  # its SETATTR, timed
        assert "fuse_flush_times" in worst["evidence"], (seen, worst.to_dict())
