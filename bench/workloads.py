"""Workloads and mounts of the bench: fio sequential writes, a bindfs mount, a paced load of
FUSE STATFS requests whose count the load itself knows (one ``fstatvfs`` = one request), and a
C load of 4 KiB ``pwrite`` calls as fast as they go (``bench/pwrite_load.c``, compiled at bench
time: Python's own cost per call would take CPU from the server on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fusewb.contract.errors import FusewbError
from fusewb.tracers.mounts import FuseMount, fuse_mounts

from bench.system import bench_env

__all__ = ["fio_write", "fio_run", "FioRun", "write_requests", "bindfs_mount", "tmpfs_mount",
           "LoadCount", "statfs_load", "compile_pwrite_load", "PwriteLoad", "finish_pwrite_loads",
           "MIB"]

MIB = 1024 * 1024
PWRITE_LOAD_C = Path(__file__).resolve().parent / "pwrite_load.c"
MOUNT_TIMEOUT = 10.0


@dataclass(frozen=True)
class FioRun:
    """One fio write job: throughput and what fio itself spent."""

    mib_s: float  # as fio measures it: its runtime includes the final fsync
    bytes: int
    cpu_s: float  # fio's user + system CPU time


def fio_write(directory: str, block: str, size: str, timeout: float = 300.0) -> float:
    """Sequential ``write(2)`` of ``size`` in ``block`` blocks, then fsync; MiB/s."""
    return fio_run(directory, block, size, timeout).mib_s


def fio_run(directory: str, block: str, size: str, timeout: float = 300.0) -> FioRun:
    """Sequential ``write(2)`` of ``size`` in ``block`` blocks, then fsync (fio, psync)."""
    args = ["fio", "--name=bench", f"--directory={directory}", "--ioengine=psync", "--rw=write",
            f"--bs={block}", f"--size={size}", "--end_fsync=1", "--unlink=1",
            "--output-format=json"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise FusewbError(f"fio on {directory} ran over {timeout:g} s",
                          "check the mount with 'fusewb fixture status'") from None
    if out.returncode != 0:
        tail = " | ".join(out.stderr.strip().splitlines()[-2:])
        raise FusewbError(f"fio on {directory} failed ({tail})", "run the fio command by hand")
    job = json.loads(out.stdout[out.stdout.index("{"):])["jobs"][0]
    write = job["write"]
    if not write["runtime"]:
        raise FusewbError(f"fio on {directory} reported no runtime", "use a larger --size")
    cpu_s = (job["usr_cpu"] + job["sys_cpu"]) / 100 * job["job_runtime"] / 1000
    return FioRun(write["io_bytes"] / MIB / (write["runtime"] / 1000), write["io_bytes"], cpu_s)


def write_requests(mount: FuseMount, block: str, size: str, timeout: float = 300.0) -> int:
    """FUSE WRITE requests sent to ``mount`` while fio writes ``size`` in ``block`` blocks,
    counted by ``perf stat`` on the ``fuse:fuse_request_send`` tracepoint (0 if perf fails)."""
    perf = ["perf", "stat", "-x,", "-a", "-e", "fuse:fuse_request_send", "--filter",
            f"opcode == 16 && connection == {mount.connection}", "--"]
    args = ["fio", "--name=count", f"--directory={mount.mountpoint}", "--ioengine=psync",
            "--rw=write", f"--bs={block}", f"--size={size}", "--end_fsync=1", "--unlink=1",
            "--output-format=terse"]
    try:
        out = subprocess.run(perf + args, capture_output=True, text=True, timeout=timeout,
                             check=False)
    except subprocess.TimeoutExpired:
        return 0
    for line in out.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "fuse:fuse_request_send" and fields[0].isdigit():
            return int(fields[0])
    return 0


def _mount_at(path: str) -> FuseMount | None:
    return next((m for m in fuse_mounts() if m.mountpoint == path), None)


def _unmount(path: str) -> None:
    for args in (["umount", path], ["umount", "-l", path]):
        try:
            if subprocess.run(args, capture_output=True, timeout=MOUNT_TIMEOUT,
                              check=False).returncode == 0:
                return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def bindfs_mount(backing: Path, mountpoint: Path, *options: str) -> Iterator[FuseMount]:
    """``bindfs BACKING MOUNTPOINT`` (libfuse, C) for the duration of the block."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    real = os.path.realpath(mountpoint)
    if _mount_at(real) is not None:
        raise FusewbError(f"{real} is already a FUSE mount", f"umount {real}")
    out = subprocess.run(["bindfs", *options, str(backing), real], capture_output=True,
                         text=True, timeout=MOUNT_TIMEOUT, check=False)
    mount = _mount_at(real)
    if out.returncode != 0 or mount is None:
        _unmount(real)
        raise FusewbError(f"bindfs did not mount {real} ({out.stderr.strip() or out.returncode})",
                          "apt-get install bindfs fuse3")
    try:
        yield mount
    finally:
        _unmount(real)


@contextmanager
def tmpfs_mount(path: Path, size_mib: int = 4096) -> Iterator[Path]:
    """A private tmpfs at ``path``: a backing folder whose fsync is free, so write benchmarks
    measure FUSE, not the disk (as the temp-page removal benchmark did: fio on tmpfs)."""
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs",
                          str(path)], capture_output=True, text=True, timeout=MOUNT_TIMEOUT,
                         check=False)
    if out.returncode != 0:
        raise FusewbError(f"cannot mount a tmpfs at {path} ({out.stderr.strip()})",
                          "run the bench as root")
    try:
        yield path
    finally:
        _unmount(str(path))


@dataclass(frozen=True)
class LoadCount:
    """What a load did by its own count: calls made, over how long, by which processes."""

    calls: int
    seconds: float
    tgids: list[int]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


def _outputs(workers: list[subprocess.Popen], timeout: float, what: str) -> list[dict]:
    """The JSON each of ``workers`` prints, once all have exited within ``timeout`` seconds;
    FusewbError (every worker killed) if one overruns or fails."""
    results = []
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            out, err = worker.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
                w.wait(10)
            raise FusewbError(f"{what} did not finish", "check the FUSE mount") from None
        if worker.returncode != 0:
            for w in workers:
                w.kill()
                w.wait(10)
            raise FusewbError(f"{what} failed ({err.strip()[-200:]})", "check the FUSE mount")
        results.append(json.loads(out))
    return results


def statfs_load(path: Path, rate: float, seconds: float, processes: int = 2) -> LoadCount:
    """``processes`` workers (:mod:`bench.statfs_load`) issuing ``fstatvfs`` on ``path`` at
    ``rate`` calls/s in total for ``seconds``, started together; their own count of calls."""
    start_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 1_000_000_000  # after imports
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.statfs_load", str(path), "--rate", str(rate / processes),
             "--seconds", str(seconds), "--start-at-ns", str(start_at)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bench_env(),
        )
        for _ in range(processes)
    ]
    results = _outputs(workers, seconds + 60, f"the STATFS load on {path}")
    return LoadCount(
        calls=sum(r["calls"] for r in results),
        seconds=max(r["seconds"] for r in results),
        tgids=[r["tgid"] for r in results],
    )


def compile_pwrite_load(directory: Path) -> Path:
    """``bench/pwrite_load.c`` compiled with gcc into ``directory``; the binary's path."""
    binary = directory / "pwrite_load"
    out = subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(binary), str(PWRITE_LOAD_C)],
                         capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise FusewbError(f"gcc could not build {PWRITE_LOAD_C.name} ({out.stderr.strip()[-300:]})",
                          "apt-get install gcc libc6-dev")
    return binary


@dataclass(frozen=True)
class PwriteLoad:
    """One run of :func:`compile_pwrite_load`'s binary: ``processes`` x ``threads`` writers,
    each pwrite(2)ing 4 KiB blocks into a file of its own under ``prefix`` as fast as it can."""

    binary: Path
    prefix: Path
    processes: int
    threads: int = 1

    def start(self, seconds: float, start_at_ns: int = 0) -> subprocess.Popen:
        """The writers, started (beginning at ``start_at_ns`` CLOCK_MONOTONIC, 0: now)."""
        return subprocess.Popen(
            [str(self.binary), str(self.prefix), str(self.processes), str(self.threads),
             str(seconds), str(start_at_ns)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def run(self, seconds: float) -> LoadCount:
        """Run for ``seconds``; the calls the writers made."""
        return finish_pwrite_loads([self.start(seconds)], seconds)[0]


def finish_pwrite_loads(started: list[subprocess.Popen], seconds: float) -> list[LoadCount]:
    """What each of the started :class:`PwriteLoad` runs did, once all have ended."""
    return [LoadCount(calls=r["ops"], seconds=r["seconds"], tgids=r["pids"])
            for r in _outputs(started, seconds + 60, "the pwrite load")]
