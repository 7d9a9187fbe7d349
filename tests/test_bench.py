"""Smoke tests of the benchmark harness (``bench/``): the quick analysis part runs end to end and
prints and records the table of ratios; interleaving and ratios behave. Targets are not
asserted here (they are what the bench measures, not what a test can promise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.stats import COLUMNS, Row, Spread, interleaved, paired_ratios, render_markdown

REPO = Path(__file__).resolve().parent.parent


def test_interleaving_rotates_the_order_and_runs_each_variant_once_per_repetition() -> None:
    runs = list(interleaved(["a", "b", "c"], 4))
    orders = [[v for rep, v in runs if rep == r] for r in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_ratios_are_paired_per_repetition_and_summarised_as_median_and_range() -> None:
    ratios = paired_ratios([90.0, 50.0, 99.0], [100.0, 50.0, 110.0])
    assert ratios == [0.9, 1.0, 0.9]
    spread = Spread.of(ratios)
    assert (spread.median, spread.low, spread.high, spread.n) == (0.9, 0.9, 1.0, 3)
    row = Row("p", "c", "v", "MiB/s", Spread.of([1.0, 2.0]), spread, "base", "> 1", False)
    table = render_markdown([row])
    assert table.splitlines()[0] == "| " + " | ".join(COLUMNS) + " |"
    assert "| 0.900 | 0.900-1.00 (n=3) | base | > 1 | NO |" in table


def test_quick_analysis_part_prints_and_records_the_table_of_ratios(tmp_path) -> None:
    results = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "analysis", "--quick", "--repetitions", "1",
         "--results", str(results), "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    header = done.stdout.splitlines()[0].split()
    assert header[:4] == ["part", "case", "variant", "median"]
    assert {"ratio", "spread", "to", "target", "met"} <= set(header)
    rss_rows = [line for line in done.stdout.splitlines() if "peak RSS" in line]
    # per capture size and engine (pandas, streaming, auto: the default); the fleet: 3 engines +
    # the largest worker
    assert len(rss_rows) == 2 * 3 + 4, rss_rows
    for line in rss_rows:
        cells = line.split()
        ratio = cells[cells.index("MiB") + 1]
        assert float(ratio) > 1.0  # memory is always above the Parquet size on disk
    text = results.read_text()
    assert "## Results" in text and "| analysis | 1M events: wall time | streaming |" in text
    assert "| analysis | 1M events: peak RSS | auto |" in text
    assert "| analysis | fleet 3x100k events: peak RSS | dask (2 local workers): largest worker |" \
        in text
    assert "kernel:" in text and "cpu:" in text
    assert "analysis: building a synthetic capture" in done.stderr  # progress shown


BPFTRACE_HIST = """Attaching 3 probes...


@ns[16]:
[0]                    3 |                                                    |
[1]                    1 |                                                    |
[8K, 16K)          28594 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@                  |
[16K, 32K)         43519 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|

@ns[22]:
[4K, 8K)            4015 |@@@@                                                |
[64M, 128M)           12 |                                                    |
"""


def test_request_bench_reads_bpftrace_histograms_per_opcode() -> None:
    from bench.requests import bpftrace_counts

    assert bpftrace_counts(BPFTRACE_HIST) == {16: 3 + 1 + 28594 + 43519, 22: 4015 + 12}
    assert bpftrace_counts("Attaching 3 probes...\n") == {}


def test_request_bench_runs_count_every_request_and_each_slow_one_as_a_row(tmp_path) -> None:
    """The requests part's machinery on this kernel, one short run each: bpftrace's join on
    (connection, unique) and fusewb's in-kernel histograms both count the 2 requests of every
    pwrite on the bindfs connection (none of the fixture's behind it), and in the 1% slow case
    fusewb writes a row for each slow WRITE and none for the fast ones."""
    import platform
    import shutil

    from tests.support import require, require_bpf, require_fuse

    require_fuse()
    require_bpf()
    for tool in ("bindfs", "bpftrace", "bpftool", "gcc"):
        require(shutil.which(tool) is not None, f"needs {tool}")
    release = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2])
    require(release >= (6, 18), "bpftrace's join needs unique set at fuse_request_send (6.18+)")
    from bench.requests import BPFTRACE, FUSEWB, measure, mounted_cases, with_slow_threads
    from bench.system import ensure_tracefs
    from bench.workloads import compile_pwrite_load

    ensure_tracefs()
    binary = compile_pwrite_load(tmp_path)
    with mounted_cases(tmp_path / "mounts", binary) as (fast, slow):
        peer = measure(fast, BPFTRACE, tmp_path / "unused", 1.0)
        traced = measure(with_slow_threads(slow, 8), FUSEWB, tmp_path / "capture", 1.0)
    assert peer.fast.calls > 1000 and peer.tracer_cpu is not None
    assert 1.99 <= peer.requests_per_pwrite <= 2.05, peer
    assert 1.99 <= traced.requests_per_pwrite <= 2.05, traced
    assert traced.slow is not None and traced.session_calls[1] >= 50, traced
    assert 0.98 <= traced.rows_per_slow_pwrite <= 1.05, traced
    assert traced.lost == 0


def test_soak_growth_compares_the_last_quarter_with_the_first_after_the_first_minute() -> None:
    from bench.soak import Sample, soak_rows

    def minutes(rss: list[float]) -> list[Sample]:
        return [Sample(i + 1, r, 0.01, 0.1 * i, 100_000.0) for i, r in enumerate(rss)]

    # the first minute (after the compile) is left out; 8 settled minutes: quarters of 2
    steady = {row.variant: row for row in soak_rows(minutes([300, 200, 202, 201, 203, 200, 202, 201, 203]), 9)}
    assert steady["tracer RSS growth"].value.median == 202 / 201 and steady["tracer RSS growth"].met
    assert steady["tracer RSS, last quarter"].value.median == 202 and not steady["tracer RSS, last quarter"].met
    assert steady["capture growth"].value.median == pytest.approx(0.1)
    growing = {row.variant: row for row in soak_rows(minutes([100, 100, 100, 110, 120, 130, 140, 150, 160]), 9)}
    assert growing["tracer RSS growth"].value.median == 155 / 100 and not growing["tracer RSS growth"].met
    assert growing["tracer RSS, last quarter"].met is False and soak_rows(minutes([100, 120]), 2)


def test_a_part_run_on_its_own_replaces_only_its_rows_targets_and_notes() -> None:
    from bench.results import merge_run

    def record(rows: dict[str, str], date: str, command: str) -> str:
        table = "\n".join(f"| {part} | case | v | {value} |" for part, value in rows.items())
        targets = "\n".join(f"- {part} / case / v: target: **met** ({value})" for part, value in rows.items())
        notes = "\n\n".join(f"## {part} (9 s)\n\n- {part} note {value}" for part, value in rows.items())
        return (f"# fusewb benchmarks\n\n- date: {date}\n- command: `{command}` (1 min)\n\n## Results\n\n"
                f"| part | case | variant | median |\n| --- | --- | --- | --- |\n{table}\n\n"
                f"## Target check\n\n{targets}\n\n{notes}\n")

    old = record({"a": "1", "soak": "2", "z": "3"}, "D0", "python -m bench")
    run = record({"soak": "20"}, "D1", "python -m bench soak --results r.md")
    merged = merge_run(old, run)
    assert merged.splitlines()[9:12] == ["| a | case | v | 1 |", "| soak | case | v | 20 |", "| z | case | v | 3 |"]
    assert "- soak / case / v: target: **met** (20)" in merged and "(2)" not in merged
    assert ("## soak (9 s, run on its own: `python -m bench soak --results r.md` (1 min), D1)\n\n"
            "- soak note 20\n\n## z (9 s)") in merged
    assert "- a note 1" in merged and "- z note 3" in merged and "- date: D0" in merged
    new_part = merge_run(record({"a": "1"}, "D0", "x"), run)
    assert new_part.rstrip().endswith("- soak note 20")
    assert "| a | case | v | 1 |\n| soak | case | v | 20 |\n\n## Target check" in new_part
