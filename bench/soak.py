"""Part 7, the tracer for an hour: ``fusewb trace --mount MNT`` (its defaults: every request
filed in the in-kernel histograms, a row only for the slow ones) on bindfs over a tmpfs, under
the requests part's steady load (``LOAD_PROCESSES`` writers pwriting 4 KiB blocks as fast as
they can, in one-minute runs back to back), sampled after every minute: the tracer process's
RSS (``VmRSS``), its CPU time over that minute, the capture's size on disk and the load's
rate. An hour in ``make bench``, three minutes with ``--quick``; :func:`soak` with shorter
intervals is the short soak of tests/test_tracer_soak.py.

No growth means the median RSS of the last quarter of the minutes within 10% of that of the
first quarter (the first minute left out of both: the tracer settles after its compile); the
capture's growth and the CPU share are reported as measured. The issue's RSS target is 150 MiB.
Every minute's sample goes to RESULTS.md.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.analysis_speed import disk_bytes
from bench.peers import cpu_seconds_of, fusewb_trace
from bench.requests import LOAD_PROCESSES
from bench.stats import PartResult, Row, Spread
from bench.system import Settings, require_tools
from bench.workloads import PwriteLoad, bindfs_mount, compile_pwrite_load, tmpfs_mount

__all__ = ["run", "soak", "soak_rows", "growth", "Sample", "SoakRun", "MINUTES", "RSS_TARGET_MIB", "GROWTH_LIMIT"]

MINUTES = {"full": 60, "quick": 3}
MINUTE_S = 60.0
RSS_TARGET_MIB = 150.0
GROWTH_LIMIT = 1.10  # last quarter's median RSS over the first quarter's


@dataclass(frozen=True)
class Sample:
    """The tracer after one interval of load (a minute in the bench, shorter in the tests)."""

    number: int
    rss_mib: float
    cpu_share: float  # of one CPU, over the interval
    capture_mib: float
    requests_per_s: float  # the load's pwrite calls x 2 (WRITE and GETXATTR each)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def _quarters(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """First and last quarter of the minutes after the first (at least one minute each)."""
    settled = samples[1:] or samples
    n = max(1, len(settled) // 4)
    return settled[:n], settled[-n:]


def growth(samples: list[Sample]) -> tuple[float, float]:
    """(median RSS of the last quarter, that over the first quarter's median): see
    :func:`_quarters`."""
    first, last = _quarters(samples)
    rss_last = statistics.median(s.rss_mib for s in last)
    return rss_last, rss_last / statistics.median(s.rss_mib for s in first)


def soak_rows(samples: list[Sample], minutes: int) -> list[Row]:
    """The table rows of a soak: RSS against the target, its growth (last quarter over first),
    CPU share, capture growth per minute and the load's rate."""
    rss_last, growth_x = growth(samples)
    _first, last = _quarters(samples)
    case = f"{minutes} min at a steady load"
    return [
        Row("soak", case, "tracer RSS, last quarter", "MiB", Spread.of([s.rss_mib for s in last]),
            Spread.of([rss_last / RSS_TARGET_MIB]), f"{RSS_TARGET_MIB:.0f} MiB", "<= 1",
            rss_last <= RSS_TARGET_MIB),
        Row("soak", case, "tracer RSS growth", "x", Spread.of([growth_x]), Spread.of([growth_x]),
            "first quarter", f"<= {GROWTH_LIMIT}", growth_x <= GROWTH_LIMIT),
        Row("soak", case, "tracer CPU", "% of a CPU",
            Spread.of([100 * s.cpu_share for s in samples[1:] or samples])),
        Row("soak", case, "capture growth", "MiB/min",
            Spread.of([b.capture_mib - a.capture_mib for a, b in zip(samples, samples[1:])] or [0.0])),
        Row("soak", case, "load", "requests/s", Spread.of([s.requests_per_s for s in samples])),
    ]


@dataclass
class SoakRun:
    """What a soak saw: one sample per interval, the tracer's exit code, where its capture is,
    the connection it traced and the load's pwrite calls over the whole soak."""

    samples: list[Sample]
    exit_code: int
    capture: Path
    connection: int
    pwrite_calls: int


def soak(workdir: Path, intervals: int, interval_s: float,
         progress: Callable[[str], None]) -> SoakRun:
    """``fusewb trace --mount MNT`` (its defaults) on bindfs over a tmpfs for ``intervals`` runs
    of the steady pwrite load of ``interval_s`` each, the tracer sampled after each. Everything
    it mounted is unmounted and the tracer stopped on the way out."""
    require_tools("bindfs", "gcc", "fusermount3")
    for folder in ("soak-bin", "soak-out", "soak-tmpfs", "soak-mnt"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    binary = compile_pwrite_load(workdir / "soak-bin")
    capture = workdir / "soak-out" / "capture"
    samples: list[Sample] = []
    calls = 0
    with tmpfs_mount(workdir / "soak-tmpfs", size_mib=256) as backing, \
            bindfs_mount(backing, workdir / "soak-mnt") as mount:
        load = PwriteLoad(binary, Path(mount.mountpoint) / "w", LOAD_PROCESSES)
        tracer = fusewb_trace(mount.mountpoint, capture)
        try:
            cpu = cpu_seconds_of(tracer.pid)
            for number in range(1, intervals + 1):
                began = time.monotonic()
                count = load.run(interval_s)
                calls += count.calls
                now_cpu = cpu_seconds_of(tracer.pid)
                sample = Sample(number, _rss_mib(tracer.pid),
                                (now_cpu - cpu) / (time.monotonic() - began),
                                disk_bytes(capture) / (1 << 20), 2 * count.rate)
                cpu = now_cpu
                samples.append(sample)
                progress(f"soak: {number}/{intervals}: tracer RSS {sample.rss_mib:.0f} MiB, "
                         f"CPU {100 * sample.cpu_share:.1f}%, capture {sample.capture_mib:.1f} MiB, "
                         f"{sample.requests_per_s:,.0f} requests/s")
        finally:
            code = tracer.stop()
    return SoakRun(samples, code, capture, mount.connection, calls)


def run(settings: Settings, progress: Callable[[str], None]) -> PartResult:
    """Trace a steady request load for the mode's minutes, sampling the tracer each minute."""
    minutes = MINUTES["quick" if settings.quick else "full"]
    result = PartResult("soak")
    done = soak(settings.workdir, minutes, MINUTE_S, progress)
    samples = done.samples
    if done.exit_code != 0:
        result.notes.append(f"fusewb trace exited with {done.exit_code} at the end of the soak")
    result.rows += soak_rows(samples, minutes)
    result.notes.append("every minute: " + "; ".join(
        f"{s.number}: {s.rss_mib:.0f} MiB, {100 * s.cpu_share:.1f}% CPU, capture {s.capture_mib:.1f} MiB, "
        f"{s.requests_per_s / 1000:.0f}k req/s" for s in samples))
    return result
