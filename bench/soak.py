"""Part 7, the tracer for an hour: ``fusewb trace --mount MNT`` (its defaults: every request
filed in the in-kernel histograms, a row only for the slow ones) on bindfs over a tmpfs, under
the requests part's steady load (``LOAD_PROCESSES`` writers pwriting 4 KiB blocks as fast as
they can, in one-minute runs back to back), sampled after every minute: the tracer process's
RSS (``VmRSS``), its CPU time over that minute, the capture's size on disk and the load's
rate. An hour in ``make bench``, three minutes with ``--quick``.

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

__all__ = ["run", "soak_rows", "Sample", "MINUTES", "RSS_TARGET_MIB", "GROWTH_LIMIT"]

MINUTES = {"full": 60, "quick": 3}
MINUTE_S = 60.0
RSS_TARGET_MIB = 150.0
GROWTH_LIMIT = 1.10  # last quarter's median RSS over the first quarter's


@dataclass(frozen=True)
class Sample:
    """The tracer after one minute of load."""

    minute: int
    rss_mib: float
    cpu_share: float  # of one CPU, over the minute
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


def soak_rows(samples: list[Sample], minutes: int) -> list[Row]:
    """The table rows of a soak: RSS against the target, its growth (last quarter over first),
    CPU share, capture growth per minute and the load's rate."""
    first, last = _quarters(samples)
    rss_first = statistics.median(s.rss_mib for s in first)
    rss_last = statistics.median(s.rss_mib for s in last)
    growth = rss_last / rss_first
    case = f"{minutes} min at a steady load"
    return [
        Row("soak", case, "tracer RSS, last quarter", "MiB", Spread.of([s.rss_mib for s in last]),
            Spread.of([rss_last / RSS_TARGET_MIB]), f"{RSS_TARGET_MIB:.0f} MiB", "<= 1",
            rss_last <= RSS_TARGET_MIB),
        Row("soak", case, "tracer RSS growth", "x", Spread.of([growth]), Spread.of([growth]),
            "first quarter", f"<= {GROWTH_LIMIT}", growth <= GROWTH_LIMIT),
        Row("soak", case, "tracer CPU", "% of a CPU",
            Spread.of([100 * s.cpu_share for s in samples[1:] or samples])),
        Row("soak", case, "capture growth", "MiB/min",
            Spread.of([b.capture_mib - a.capture_mib for a, b in zip(samples, samples[1:])] or [0.0])),
        Row("soak", case, "load", "requests/s", Spread.of([s.requests_per_s for s in samples])),
    ]


def run(settings: Settings, progress: Callable[[str], None]) -> PartResult:
    """Trace a steady request load for the mode's minutes, sampling the tracer each minute."""
    require_tools("bindfs", "gcc", "fusermount3")
    minutes = MINUTES["quick" if settings.quick else "full"]
    result = PartResult("soak")
    binary = compile_pwrite_load(settings.scratch("soak-bin"))
    capture = settings.scratch("soak-out") / "capture"
    samples: list[Sample] = []
    with tmpfs_mount(settings.scratch("soak-tmpfs"), size_mib=256) as backing, \
            bindfs_mount(backing, settings.scratch("soak-mnt")) as mount:
        load = PwriteLoad(binary, Path(mount.mountpoint) / "w", LOAD_PROCESSES)
        tracer = fusewb_trace(mount.mountpoint, capture)
        try:
            cpu = cpu_seconds_of(tracer.pid)
            for minute in range(1, minutes + 1):
                began = time.monotonic()
                count = load.run(MINUTE_S)
                now_cpu = cpu_seconds_of(tracer.pid)
                sample = Sample(minute, _rss_mib(tracer.pid), (now_cpu - cpu) / (time.monotonic() - began),
                                disk_bytes(capture) / (1 << 20), 2 * count.rate)
                cpu = now_cpu
                samples.append(sample)
                progress(f"soak: minute {minute}/{minutes}: tracer RSS {sample.rss_mib:.0f} MiB, "
                         f"CPU {100 * sample.cpu_share:.1f}%, capture {sample.capture_mib:.1f} MiB, "
                         f"{sample.requests_per_s:,.0f} requests/s")
        finally:
            code = tracer.stop()
    if code != 0:
        result.notes.append(f"fusewb trace exited with {code} at the end of the soak")
    result.rows += soak_rows(samples, minutes)
    result.notes.append("every minute: " + "; ".join(
        f"{s.minute}: {s.rss_mib:.0f} MiB, {100 * s.cpu_share:.1f}% CPU, capture {s.capture_mib:.1f} MiB, "
        f"{s.requests_per_s / 1000:.0f}k req/s" for s in samples))
    return result
