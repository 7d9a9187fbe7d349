"""Part 3, analysis: ``fusewb analyze CAPTURE --format json -o /dev/null`` on synthetic captures
of 1M and 10M events (``fusewb.analysis.synthetic``) with the pandas engine, the streaming one
and the default (``--engine auto``, which picks by the capture's size) side by side, wall time
and peak memory (the child's ``ru_maxrss`` from ``wait4``) against the capture's size on disk; then a fleet (one sub-folder per host) with the pandas,
streaming and dask engines, with each Dask worker's peak memory.

Evidence for the memory bound: the decoded Arrow size of the capture's tables, the least an
analysis holding whole tables in memory (the pandas engine) needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fusewb.contract.errors import FusewbError

from bench.stats import PartResult, Row, Spread, fmt_number, interleaved, paired_ratios
from bench.system import Settings, bench_env

__all__ = ["run", "Analysis", "analyze_once", "disk_bytes", "SIZES", "SIZES_QUICK"]

TARGET_SECONDS = {10_000_000: 60.0}
TARGET_MEMORY_RATIO = 4.0
SIZES = [1_000_000, 10_000_000]
SIZES_QUICK = [100_000, 1_000_000]
# auto: fusewb analyze's default, which picks the engine by the capture's size on disk
ENGINES_SINGLE = ["pandas", "streaming", "auto"]
FLEET = (8, 1_000_000)  # hosts x events per host (8 x 10M would need ~25 GiB for pandas)
FLEET_QUICK = (3, 100_000)
DASK_LABEL = "dask (2 local workers)"
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


def analyze_once(capture: Path, engine: str = "pandas", timeout: float = ANALYZE_TIMEOUT,
                 workers_file: Path | None = None) -> Analysis:
    """Run ``fusewb analyze --engine ENGINE`` on ``capture`` from a small launcher
    (:mod:`bench.child_rusage`, so the peak RSS is the analysis's own, not inherited from this
    process); time and RSS. With ``workers_file`` (dask) the run goes through
    :mod:`bench.fleet_child`, which also writes each Dask worker's peak RSS there."""
    if workers_file is None:
        analysis = [str(FUSEWB), "analyze", str(capture), "--format", "json", "-o", os.devnull,
                    "--engine", engine]
    else:
        analysis = [sys.executable, "-m", "bench.fleet_child", str(capture), str(workers_file)]
    command = [sys.executable, "-m", "bench.child_rusage", "--", *analysis]
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


def _time_row(case: str, engine: str, seconds: list[float], baseline: list[float] | None,
              target: float | None) -> Row:
    if baseline is not None:  # no slower than today's engine, run by run
        ratio = Spread.of(paired_ratios(seconds, baseline))
        return Row(part="analysis", case=f"{case}: wall time", variant=engine, unit="s",
                   value=Spread.of(seconds), ratio=ratio, ratio_to="pandas engine",
                   target="<= pandas" if target else "", met=ratio.median <= 1.0 if target
                   else None)
    return Row(part="analysis", case=f"{case}: wall time", variant=engine, unit="s",
               value=Spread.of(seconds),
               ratio=Spread.of([s / target for s in seconds]) if target else None,
               ratio_to=f"{target:g} s" if target else "",
               target=f"< {target:g} s" if target else "",
               met=(Spread.of(seconds).median < target) if target else None)


def _memory_row(case: str, engine: str, peaks: list[int], disk: int, target: bool) -> Row:
    memory = Spread.of([peak / disk for peak in peaks])
    return Row(part="analysis", case=f"{case}: peak RSS", variant=engine, unit="MiB",
               value=Spread.of([peak / 2**20 for peak in peaks]), ratio=memory,
               ratio_to=f"disk {disk / 2**20:.0f} MiB",
               target=f"< {TARGET_MEMORY_RATIO:g}x disk" if target else "",
               met=memory.median < TARGET_MEMORY_RATIO if target else None)


def _single(settings: Settings, progress: Callable[[str], None], result: PartResult) -> None:
    """One host, 1M and 10M events: today's engine (pandas) and the streaming one, interleaved."""
    from fusewb.analysis.synthetic import synthetic_capture  # noqa: PLC0415

    sizes = SIZES_QUICK if settings.quick else SIZES
    captures: dict[int, Path] = {}
    rows_in: dict[int, int] = {}
    for events in sizes:
        progress(f"analysis: building a synthetic capture of {_label(events)}")
        path = settings.workdir / f"analysis-{events}"
        synthetic_capture(path, n_waits=events // 2)  # as many WRITE requests, 2% others
        captures[events] = path
        rows_in[events] = sum(_rows(p) for p in path.iterdir() if p.is_dir())
    samples: dict[tuple[int, str], list[Analysis]] = {}
    repetitions = max(1, min(settings.repetitions, 3))
    runs = [(events, engine) for events in sizes for engine in ENGINES_SINGLE]
    order = list(interleaved(runs, repetitions))
    for done, (_, (events, engine)) in enumerate(order, 1):
        progress(f"analysis: fusewb analyze --engine {engine}, {_label(events)} "
                 f"({done}/{len(order)})")
        samples.setdefault((events, engine), []).append(analyze_once(captures[events], engine))
    for events in sizes:
        disk = disk_bytes(captures[events])
        arrow = _arrow_bytes(captures[events])
        target_s = TARGET_SECONDS.get(events)
        base = [a.seconds for a in samples[(events, "pandas")]]
        for engine in ENGINES_SINGLE:
            seconds = [a.seconds for a in samples[(events, engine)]]
            peaks = [a.peak_rss_bytes for a in samples[(events, engine)]]
            result.rows.append(_time_row(_label(events), engine, seconds,
                                         base if engine != "pandas" else None, target_s))
            result.rows.append(_memory_row(_label(events), engine, peaks, disk,
                                           bool(target_s) and engine != "pandas"))
        medians = {engine: Spread.of([a.peak_rss_bytes / disk for a in
                                      samples[(events, engine)]]).median
                   for engine in ENGINES_SINGLE}
        result.notes.append(
            f"{_label(events)} ({rows_in[events]:,} rows): {disk / 2**20:.0f} MiB on disk, "
            f"{arrow / 2**20:.0f} MiB as decoded Arrow columns ({arrow / disk:.1f}x disk); peak "
            f"RSS {fmt_number(medians['pandas'])}x disk with the pandas engine, "
            f"{fmt_number(medians['streaming'])}x with the streaming engine, "
            f"{fmt_number(medians['auto'])}x by default (--engine auto).")
    result.notes.insert(0, (
        "Method: `synthetic_capture(path, n_waits=N/2)` (N/2 waits over every path, N/2 WRITE "
        "requests, 1% of N/2 each of throttle and vm rows, 1M-row Parquet parts); `fusewb "
        "analyze CAPTURE --format json -o /dev/null --engine pandas|streaming` in a child, "
        f"{repetitions} interleaved runs per capture and engine; peak memory is the analysis "
        "process's maximum RSS (wait4 in a small launcher, `bench/child_rusage.py`, so the "
        "bench's own memory is not inherited). Both engines give the same report "
        "(tests/test_analysis_engines.py)."))
    for row in result.rows:
        if row.met is False and row.ratio is not None:
            result.notes.append(f"Target missed: {row.case} {row.variant} "
                                f"{fmt_number(row.ratio.median)} against {row.target}.")


def _fleet(settings: Settings, progress: Callable[[str], None], result: PartResult) -> None:
    """FLEET_HOSTS hosts (one sub-folder each): pandas, streaming and dask (local cluster)."""
    from fusewb.analysis.synthetic import synthetic_capture  # noqa: PLC0415

    hosts, per_host = FLEET_QUICK if settings.quick else FLEET
    fleet = settings.workdir / "analysis-fleet"
    progress(f"analysis: building a fleet of {hosts} hosts x {_label(per_host)}")
    for number in range(hosts):
        synthetic_capture(fleet / f"host{number}", n_waits=per_host // 2, seed=number,
                          host=f"host{number}")
    disk = disk_bytes(fleet)
    case = f"fleet {hosts}x{_label(per_host)}"
    engines = ["pandas", "streaming", "dask"]
    samples: dict[str, list[Analysis]] = {engine: [] for engine in engines}
    workers: list[int] = []
    repetitions = max(1, min(settings.repetitions, 2))
    order = list(interleaved(engines, repetitions))
    for done, (_, engine) in enumerate(order, 1):
        progress(f"analysis: {case}, --engine {engine} ({done}/{len(order)})")
        peaks_file = settings.workdir / "dask-workers.json" if engine == "dask" else None
        samples[engine].append(analyze_once(fleet, engine, workers_file=peaks_file))
        if peaks_file is not None:
            workers.append(max(json.loads(peaks_file.read_text()).values()))
    base = [a.seconds for a in samples["pandas"]]
    for engine in engines:
        seconds = [a.seconds for a in samples[engine]]
        result.rows.append(_time_row(case, engine if engine != "dask" else DASK_LABEL, seconds,
                                     base if engine != "pandas" else None, None))
    for engine in engines:
        label = engine if engine != "dask" else f"{DASK_LABEL}: client"
        result.rows.append(_memory_row(case, label, [a.peak_rss_bytes for a in samples[engine]],
                                       disk, False))
    result.rows.append(_memory_row(case, f"{DASK_LABEL}: largest worker", workers, disk, False))
    report = settings.workdir / "fleet-report.json"
    subprocess.run([str(FUSEWB), "analyze", str(fleet), "--format", "json", "-o", str(report),
                    "--engine", "streaming"], capture_output=True, timeout=ANALYZE_TIMEOUT,
                   check=True, env=bench_env())
    raised = len(json.loads(report.read_text())["flags"])
    result.notes.append(
        f"Fleet report: {raised:,} flag rows (one per host, path, bdi, task and inode), "
        f"{report.stat().st_size / 2**20:.0f} MiB of JSON; the report's rows grow with those "
        "groups, not with the events, and every engine holds them while rendering.")
    result.notes.append(
        f"Fleet: {hosts} sub-folders (one host each) of `synthetic_capture(n_waits="
        f"{per_host // 2:,})`, {disk / 2**20:.0f} MiB on disk in all; {repetitions} interleaved "
        "runs per engine. dask: a LocalCluster of 2 worker processes x 1 thread on this 2-core "
        "machine, started and closed by each run (its start-up is in the time); the client's "
        "peak RSS is measured like the other engines, each worker's by getrusage in the worker "
        "(`bench/fleet_child.py`). Per worker memory follows one part's batch, not the fleet. "
        f"{FLEET[0]} hosts x 10M events is not run: the pandas engine peaks at about 2.4 GiB per "
        "10M events, and this machine is shared.")


def run(settings: Settings, progress: Callable[[str], None]) -> PartResult:
    """One host at two sizes (pandas vs streaming), then a fleet (pandas, streaming, dask)."""
    result = PartResult("analysis")
    _single(settings, progress, result)
    _fleet(settings, progress, result)
    return result


def _rows(table_dir: Path) -> int:
    import pyarrow.parquet as pq  # noqa: PLC0415

    return sum(pq.ParquetFile(p).metadata.num_rows for p in table_dir.glob("*.parquet"))
