"""Part 3, analysis: ``fusewb analyze CAPTURE --format json -o /dev/null`` on synthetic captures
of 1M and 10M events (``fusewb.analysis.synthetic``), wall time and peak memory (the child's
``ru_maxrss`` from ``wait4``) against the capture's size on disk.

Evidence for the memory target: the decoded Arrow size of the capture's tables, the least any
analysis holding the tables in memory needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fusewb.errors import FusewbError

from bench.stats import PartResult, Row, Spread, fmt_number, interleaved
from bench.system import Settings, bench_env

__all__ = ["run", "Analysis", "analyze_once", "disk_bytes", "SIZES", "SIZES_QUICK"]

TARGET_SECONDS = {10_000_000: 60.0}
TARGET_MEMORY_RATIO = 4.0
SIZES = [1_000_000, 10_000_000]
SIZES_QUICK = [100_000, 1_000_000]
FUSEWB = Path(sys.executable).parent / "fusewb"
ANALYZE_TIMEOUT = 600.0


@dataclass(frozen=True)
class Analysis:
    """One ``fusewb analyze`` run."""

    seconds: float
    peak_rss_bytes: int


def disk_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def analyze_once(capture: Path, timeout: float = ANALYZE_TIMEOUT) -> Analysis:
    """Run ``fusewb analyze`` on ``capture`` from a small launcher (:mod:`bench.child_rusage`,
    so the peak RSS is the analysis's own, not inherited from this process); time and RSS."""
    command = [sys.executable, "-m", "bench.child_rusage", "--", str(FUSEWB), "analyze",
               str(capture), "--format", "json", "-o", os.devnull]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                             env=bench_env(), check=False)
    except subprocess.TimeoutExpired:
        raise FusewbError(f"fusewb analyze {capture} ran over {timeout:g} s",
                          "run it by hand to see why") from None
    try:
        measured = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise FusewbError(f"could not measure fusewb analyze ({out.stderr.strip()[-200:]})",
                          "run python -m bench.child_rusage by hand") from None
    if measured["returncode"] != 0:
        raise FusewbError(f"fusewb analyze {capture} exited {measured['returncode']} "
                          f"({measured['stderr'].strip()[-200:] or 'no message'})",
                          "run it by hand to see why")
    return Analysis(measured["seconds"], measured["max_rss_bytes"])


def _arrow_bytes(capture: Path) -> int:
    import pyarrow.dataset as ds  # noqa: PLC0415

    total = 0
    for table in capture.iterdir():
        if table.is_dir() and any(table.glob("*.parquet")):
            total += ds.dataset(table, format="parquet").to_table().nbytes
    return total


def _label(events: int) -> str:
    return f"{events // 1_000_000}M events" if events >= 1_000_000 else f"{events // 1000}k events"


def run(settings: Settings, progress: Callable[[str], None]) -> PartResult:
    """Build the captures, then interleaved analyses of each; time and memory ratios."""
    from fusewb.analysis.synthetic import synthetic_capture  # noqa: PLC0415

    result = PartResult("analysis")
    sizes = SIZES_QUICK if settings.quick else SIZES
    captures: dict[int, Path] = {}
    rows_in: dict[int, int] = {}
    for events in sizes:
        progress(f"analysis: building a synthetic capture of {_label(events)}")
        path = settings.workdir / f"analysis-{events}"
        synthetic_capture(path, n_waits=events // 2)  # as many WRITE requests, 2% others
        captures[events] = path
        rows_in[events] = sum(_rows(p) for p in path.iterdir() if p.is_dir())
    samples: dict[int, list[Analysis]] = {events: [] for events in sizes}
    repetitions = max(1, min(settings.repetitions, 3))
    runs = list(interleaved(sizes, repetitions))
    for done, (rep, events) in enumerate(runs, 1):
        progress(f"analysis: fusewb analyze, {_label(events)} ({done}/{len(runs)})")
        samples[events].append(analyze_once(captures[events]))
    arrow_ratio: dict[int, float] = {}
    for events in sizes:
        disk = disk_bytes(captures[events])
        arrow = _arrow_bytes(captures[events])
        arrow_ratio[events] = arrow / disk
        seconds = [a.seconds for a in samples[events]]
        memory = [a.peak_rss_bytes / disk for a in samples[events]]
        target_s = TARGET_SECONDS.get(events)
        result.rows.append(Row(
            part="analysis", case=_label(events), variant="wall time", unit="s",
            value=Spread.of(seconds),
            ratio=Spread.of([s / target_s for s in seconds]) if target_s else None,
            ratio_to=f"{target_s:g} s" if target_s else "",
            target=f"< {target_s:g} s" if target_s else "",
            met=(Spread.of(seconds).median < target_s) if target_s else None,
        ))
        result.rows.append(Row(
            part="analysis", case=_label(events), variant="peak RSS", unit="MiB",
            value=Spread.of([a.peak_rss_bytes / 2**20 for a in samples[events]]),
            ratio=Spread.of(memory), ratio_to=f"disk {disk / 2**20:.0f} MiB",
            target=f"< {TARGET_MEMORY_RATIO:g}x disk" if target_s else "",
            met=(Spread.of(memory).median < TARGET_MEMORY_RATIO) if target_s else None,
        ))
        result.notes.append(
            f"{_label(events)} ({rows_in[events]:,} rows): {disk / 2**20:.0f} MiB on disk, "
            f"{arrow / 2**20:.0f} MiB as decoded Arrow columns ({arrow / disk:.1f}x disk); "
            f"analyze {fmt_number(Spread.of(seconds).median)} s, peak RSS "
            f"{fmt_number(Spread.of(memory).median)}x disk.")
    result.notes.insert(0, (
        "Method: `synthetic_capture(path, n_waits=N/2)` (N/2 waits over every path, N/2 WRITE "
        "requests, 1% of N/2 each of throttle and vm rows, 1M-row Parquet parts); `fusewb "
        f"analyze CAPTURE --format json -o /dev/null` in a child, {repetitions} interleaved "
        "runs per capture; peak memory is the analysis process's maximum RSS (wait4 in a small launcher, "
        "`bench/child_rusage.py`, so the bench's own memory is not inherited)."))
    big = max(sizes)
    for row in result.rows:
        if row.met is False and row.variant == "peak RSS" and row.ratio is not None:
            result.notes.append(
                f"Memory target missed by {row.ratio.median / TARGET_MEMORY_RATIO:.1f}x "
                f"({fmt_number(row.ratio.median)}x disk against {TARGET_MEMORY_RATIO:g}x). Bound: "
                f"the decoded columns alone are {arrow_ratio[big]:.1f}x the compressed Parquet, so an "
                "analysis that loads whole tables (pandas, one DataFrame per table) cannot meet "
                f"4x; the peak is {row.ratio.median / arrow_ratio[big]:.1f}x those decoded "
                "columns, the rest being the analysis's working memory (frames derived from the "
                "tables, intermediate results). Meeting it needs reading only the columns each "
                "question uses and aggregating part by part (pyarrow.dataset batches).")
        if row.met is False and row.variant == "wall time" and row.ratio is not None:
            result.notes.append(f"Time target missed: {fmt_number(row.value.median)} s, "
                                f"{row.ratio.median:.2f}x the target.")
    return result


def _rows(table_dir: Path) -> int:
    import pyarrow.parquet as pq  # noqa: PLC0415

    return sum(pq.ParquetFile(p).metadata.num_rows for p in table_dir.glob("*.parquet"))
