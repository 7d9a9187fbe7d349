"""The streaming and Dask engines answer exactly as the pandas engine (same report JSON, same
flags) on synthetic, hand-made, damaged and multi-host captures, with in-kernel histograms and
without (captures written before them); percentiles are exact from rows, within the stated
error from histograms."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusewb.analysis import capture
from click.testing import CliRunner

from fusewb.analysis.capture import load_capture
from fusewb.analysis.cli import analyze
from fusewb.analysis.report import render_report
from fusewb.analysis.scan import scan
from fusewb.analysis.synthetic import synthetic_capture
from fusewb.contract.histogram import RELATIVE_ERROR
from tests.analysis_cases import clean_capture, everything_capture

DASK_TIMEOUT = 240


def _json(path: Path, engine: str, threshold_ms: float = 50.0, **kw: str) -> dict:
    return json.loads(render_report(path, "json", threshold_ms, engine=engine, **kw).text)


def _fleet(base: Path) -> Path:
    """Four hosts: two synthetic (several parts each; one with histograms and rows from 20 ms
    on, one written before the histograms with a damaged part), two hand-made captures raising
    every flag (with histograms and before them)."""
    fleet = base / "fleet"
    synthetic_capture(fleet / "a", n_waits=6000, seed=1, host="alpha", part_rows=1000,
                      row_threshold_ms=20)
    everything_capture(fleet / "b", host="bravo")
    synthetic_capture(fleet / "c", n_waits=4000, seed=2, host="charlie", part_rows=1500,
                      schema_version=1)
    (fleet / "c" / "waits" / "part-000002.parquet").write_bytes(b"PAR1 not a part")
    everything_capture(fleet / "d", version=1, host="delta")
    return fleet


@pytest.mark.parametrize("rows_from_ms", [0.0, 20.0])
@pytest.mark.parametrize("threshold_ms", [0.0, 50.0, 1000.0])
def test_streaming_equals_pandas_on_a_synthetic_capture(tmp_path: Path, threshold_ms: float,
                                                        rows_from_ms: float,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cap = synthetic_capture(tmp_path / "cap", n_waits=20_000, part_rows=3000,
                            row_threshold_ms=rows_from_ms)
    pandas = _json(cap, "pandas", threshold_ms)
    assert pandas["flags"] and pandas["waits_by_path"]
    assert sum(r["count"] for r in pandas["waits_by_path"]) == 20_000
    assert _json(cap, "streaming", threshold_ms) == pandas
    monkeypatch.setattr(capture, "BATCH_ROWS", 700)  # parts read in several batches
    assert _json(cap, "streaming", threshold_ms) == pandas


def _before_histograms(folder: Path) -> Path:
    return everything_capture(folder, version=1)


@pytest.mark.parametrize("build", [everything_capture, _before_histograms, clean_capture])
def test_streaming_equals_pandas_on_hand_made_captures(tmp_path: Path, build) -> None:
    cap = build(tmp_path / "cap")
    assert _json(cap, "streaming") == _json(cap, "pandas")


def test_streaming_equals_pandas_with_a_damaged_part(tmp_path: Path) -> None:
    cap = synthetic_capture(tmp_path / "cap", n_waits=5000, part_rows=1000)
    (cap / "requests" / "part-000003.parquet").write_bytes(b"garbage")
    pandas = _json(cap, "pandas")
    assert "INCOMPLETE_CAPTURE" in pandas["flag_counts"]
    assert _json(cap, "streaming") == pandas


def test_a_part_bad_in_a_late_batch_counts_for_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of a part already made into partials are dropped when a later batch is bad."""
    cap = synthetic_capture(tmp_path / "cap", n_waits=6000, part_rows=2000)
    part = cap / "waits" / "part-000002.parquet"
    table = pq.read_table(part)
    ts = table.column("ts_ns").to_pylist()
    ts[1500] = None  # every row has a ts_ns: the part is corrupt
    pq.write_table(table.set_column(0, "ts_ns", pa.array(ts, pa.int64())), part)
    pandas = _json(cap, "pandas")
    assert "waits/part-000002.parquet is corrupt (nulls in ts_ns" in json.dumps(pandas["flags"])
    monkeypatch.setattr(capture, "BATCH_ROWS", 500)
    assert _json(cap, "streaming") == pandas


def _raw_waits(cap_path: Path, with_ongoing: bool = True) -> pd.DataFrame:
    """The waits read straight from the Parquet parts, with the path of their stack."""
    from fusewb.analysis.paths import attribute_path

    raw = pq.read_table(cap_path / "waits").to_pandas()
    stacks = pq.read_table(cap_path / "stacks").to_pandas()
    path_of = {int(s): attribute_path(list(f)) for s, f in zip(stacks["stack_id"],
                                                                 stacks["frames"])}
    raw["path"] = raw["stack_id"].map(path_of)
    return raw if with_ongoing else raw[~raw["ongoing"]]


def test_percentiles_are_exact_without_histograms(tmp_path: Path) -> None:
    """p50/p90/p99 per path equal numpy's on every duration read straight from the Parquet
    parts of a capture written before the histograms."""
    cap_path = synthetic_capture(tmp_path / "cap", n_waits=12_000, part_rows=2500,
                                 schema_version=1)
    result = scan(load_capture(cap_path), engine="streaming")
    raw = _raw_waits(cap_path)
    for row in result.wait_paths.itertuples():
        ms = raw.loc[raw["path"] == row.path, "duration_ns"].to_numpy() / 1e6
        assert row.count == row.rows == len(ms) and row.percentile_error_pct == 0
        assert (row.p50_ms, row.p90_ms, row.p99_ms) == tuple(np.quantile(ms, [0.5, 0.9, 0.99]))
        assert row.max_ms == ms.max()


def test_percentiles_from_histograms_are_within_the_stated_error(tmp_path: Path) -> None:
    """With histograms and rows only from 20 ms on, every wait is counted and the percentiles
    are within RELATIVE_ERROR of numpy's nearest rank on every duration, on every engine."""
    every = synthetic_capture(tmp_path / "every", n_waits=12_000, part_rows=2500,
                              schema_version=1)
    cap_path = synthetic_capture(tmp_path / "cap", n_waits=12_000, part_rows=2500,
                                 row_threshold_ms=20)
    raw = _raw_waits(every)
    assert len(pq.read_table(cap_path / "waits")) < len(raw) / 5
    for engine in ("pandas", "streaming"):
        result = scan(load_capture(cap_path), engine=engine)
        for row in result.wait_paths.itertuples():
            ms = raw.loc[raw["path"] == row.path, "duration_ns"].to_numpy() / 1e6
            assert row.count == len(ms) > row.rows and row.percentile_error_pct == RELATIVE_ERROR * 100
            for q, got in zip((0.5, 0.9, 0.99), (row.p50_ms, row.p90_ms, row.p99_ms)):
                assert got == pytest.approx(np.quantile(ms, q, method="inverted_cdf"),
                                            rel=RELATIVE_ERROR)
            assert row.max_ms == ms.max()
            assert row.total_ms == pytest.approx(ms.sum())


def test_multi_host_capture_same_flags_on_every_engine(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    pandas = _json(fleet, "pandas")
    assert len(pandas["capture"]["hosts"]) == 4 and len(pandas["host_totals"]) == 4
    assert {f["host"] for f in pandas["flags"]} == {"alpha", "bravo", "charlie", "delta"}
    assert pandas["histograms"]["hosts"] == ["alpha", "bravo"]
    errors = {(r["host"], r["percentile_error_pct"]) for r in pandas["waits_by_path"]}
    assert errors == {("alpha", 6.25), ("bravo", 6.25), ("charlie", 0.0), ("delta", 0.0)}
    assert _json(fleet, "streaming") == pandas
    done = subprocess.run(
        [sys.executable, "-m", "fusewb.cli", "analyze", str(fleet), "--engine", "dask",
         "--format", "json"], capture_output=True, text=True, timeout=DASK_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == pandas


def test_dask_engine_on_a_given_scheduler(tmp_path: Path) -> None:
    from dask.distributed import LocalCluster

    fleet = _fleet(tmp_path)
    pandas = _json(fleet, "pandas")
    lines: list[str] = []
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        rendered = render_report(fleet, "json", engine="dask", progress=lines.append,
                                 scheduler=cluster.scheduler_address)
    assert json.loads(rendered.text) == pandas
    parts = len(list(fleet.glob("*/waits/part-*.parquet")))
    assert f"dask: waits parts read {parts}/{parts}" in lines, lines


def test_streaming_progress_names_the_parts_read(tmp_path: Path) -> None:
    cap = synthetic_capture(tmp_path / "cap", n_waits=3000, part_rows=1000)
    lines: list[str] = []
    scan(load_capture(cap), engine="streaming", progress=lines.append)
    assert [line for line in lines if " waits " in line] == [
        f"reading synthetic waits part {n}/3" for n in (1, 2, 3)]
    assert "reading synthetic requests part 3/3" in lines


def test_text_report_has_totals_per_host(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    text = render_report(fleet, "text", engine="streaming").text
    table = text.split("Totals per host\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert table[0].split() == ["host", "waits", "ongoing", "requests", "flags", "lost", "worst"]
    assert [line.split()[0] for line in table[1:]] == ["alpha", "bravo", "charlie", "delta"]
    assert table[1].split()[1] == "6000"  # every wait, though most have no row


def test_bad_engine_options_fail_on_one_line(tmp_path: Path) -> None:
    cap = clean_capture(tmp_path / "cap")
    cases = [
        (["--scheduler", "tcp://127.0.0.1:1"], "--engine dask"),
        (["--engine", "dask", "--scheduler", "tcp://127.0.0.1:1"], "Dask scheduler"),
    ]
    for options, fix in cases:
        done = subprocess.run([sys.executable, "-m", "fusewb.cli", "analyze", str(cap), *options],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and fix in done.stderr, done.stderr


def test_the_engine_chooses_itself_by_the_capture_size(tmp_path: Path, monkeypatch) -> None:
    """Without --engine: pandas for a small capture, streaming once its waits and requests
    take more than STREAMING_ABOVE_BYTES on disk; --engine still forces one."""
    from fusewb.analysis.report import capture_bytes, choose_engine
    from fusewb.contract import defaults

    folder = everything_capture(tmp_path / "cap")
    cap = load_capture(folder)
    size = capture_bytes(cap)
    parts = [*folder.glob("waits/*.parquet"), *folder.glob("requests/*.parquet")]
    assert size == sum(p.stat().st_size for p in parts) > 0
    assert choose_engine(cap) == "pandas"
    monkeypatch.setattr(defaults, "STREAMING_ABOVE_BYTES", size - 1)
    assert choose_engine(cap) == "streaming"
    assert choose_engine(cap, "pandas") == "pandas" and choose_engine(cap, "dask") == "dask"
    out = tmp_path / "r.html"
    done = CliRunner().invoke(analyze, [str(folder), "--format", "html", "-o", str(out)])
    assert done.exit_code == 0 and "(streaming engine)" in done.output, done.output
    assert "<h2>Timeline</h2>" in out.read_text()
    forced = CliRunner().invoke(analyze, [str(folder), "--engine", "pandas", "--format", "json",
                                          "-o", str(tmp_path / "r.json")])
    assert "(pandas engine)" in forced.output
