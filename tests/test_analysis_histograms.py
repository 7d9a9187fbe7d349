"""The in-kernel histograms, from the bucket layout to the report: bpf/hist.h (compiled with gcc)
files values where contract/histogram.py says, percentiles from buckets stay within the stated
error, and a capture whose fast events are only in the histograms reports every one of them
(counts, means, percentiles, exact maxima) while its rows hold the slow ones; captures written
before the histograms still analyse from their rows and counters."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fusewb.analysis.capture import CaptureError, load_capture
from fusewb.analysis.flagging import flags
from fusewb.analysis.flame import stack_weights
from fusewb.analysis.report import build_report, render_json, render_report, render_text
from fusewb.analysis.requests import request_totals, requests_by_opcode
from fusewb.analysis.synthetic import make_meta, write_capture
from fusewb.analysis.waiting import wait_paths, waits
from fusewb.contract import histogram
from fusewb.contract.histogram import ERROR_TEXT, RELATIVE_ERROR, Histogram, bucket_bounds
from tests.analysis_cases import STACK_IDS, at, everything_capture, stacks_table

ROOT = Path(__file__).resolve().parent.parent
MS = 1_000_000

_HARNESS = """
typedef unsigned int u32;
typedef unsigned long long u64;
#define __always_inline inline
#include <stdio.h>
#include "hist.h"
int main(void)
{
    u64 v;
    while (scanf("%llu", &v) == 1)
        printf("%u\\n", hist_bucket(v));
    return 0;
}
"""


def _values() -> np.ndarray:
    """0..100, every power of two and its neighbours, random values up to 2**60."""
    rng = np.random.default_rng(7)
    powers = [(1 << k) + d for k in range(1, 64) for d in (-1, 0, 1)]
    return np.unique(np.concatenate([
        np.arange(101, dtype=np.uint64), np.array(powers, dtype=np.uint64),
        rng.integers(0, 1 << 60, 20_000, dtype=np.uint64),
        rng.lognormal(14, 4, 20_000).astype(np.uint64)]))


@pytest.fixture(scope="module")
def hist_bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bpf/hist.h's hist_bucket() compiled into a program reading values on stdin."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to compile bpf/hist.h")
    folder = tmp_path_factory.mktemp("hist")
    (folder / "harness.c").write_text(_HARNESS)
    defines = [f"-D{name}={value}" for name, value in histogram.defines().items()]
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", *defines, "-I", str(ROOT / "bpf"),
                    "-o", str(folder / "harness"), str(folder / "harness.c")], check=True)
    return folder / "harness"


def test_bpf_hist_h_files_values_where_bucket_of_does(hist_bucket: Path) -> None:
    values = _values()
    done = subprocess.run([str(hist_bucket)], input="\n".join(map(str, values.tolist())),
                          capture_output=True, text=True, check=True, timeout=60)
    kernel = [int(line) for line in done.stdout.split()]
    assert len(kernel) == len(values)
    assert kernel == [histogram.bucket_of(int(v)) for v in values]
    assert max(kernel) == histogram.NR_BUCKETS - 1  # 2**63 and more share the last bucket


def test_bucket_bounds_contain_their_values_and_the_vectorised_buckets_agree() -> None:
    values = _values()
    values = values[values < (1 << 63)].astype(np.int64)
    for value in values.tolist():
        index = histogram.bucket_of(value)
        lower, upper = bucket_bounds(index)
        assert lower <= value and (value < upper or index == histogram.NR_BUCKETS - 1)
        assert upper - lower <= max(lower * 2 * RELATIVE_ERROR, 1)
    assert histogram.buckets_of(values).tolist() == [histogram.bucket_of(v) for v in values.tolist()]


@pytest.mark.parametrize("sigma", [0.5, 1.5, 3.0])
def test_quantiles_are_within_the_stated_error(sigma: float) -> None:
    data = np.random.default_rng(int(sigma * 10)).lognormal(13, sigma, 50_000).astype(np.int64)
    hist = Histogram.of_values(data.tolist())
    for q in (0.01, 0.1, 0.5, 0.9, 0.99, 0.999):
        exact = np.quantile(data, q, method="inverted_cdf")
        assert abs(hist.quantile_ns(q) - exact) <= RELATIVE_ERROR * exact, q
    assert hist.quantile_ns(1.0) == data.max() == hist.max_ns
    assert hist.count == len(data) and hist.total_ns == data.sum()


# --- a capture whose fast events are only in the histograms ---------------------------------

FAST_WRITES, SLOW_WRITES = 990, 10  # 99% at 0.2-0.4 ms (histogram only), 1% at 100 ms (rows)
FAST_WAITS, SLOW_WAITS = 297, 3  # per path, fsync and close


def _fast_and_slow(folder: Path) -> Path:
    """WRITEs and waits (fsync and close) of which the slow 1% have rows, as the tracer writes
    a capture at the default row threshold of 50 ms; the fast ones are only counted."""
    rng = np.random.default_rng(3)
    fast_ms = rng.uniform(0.2, 0.4, FAST_WRITES)
    fast = {"send_ts_ns": [at(i) for i in range(FAST_WRITES)],
            "end_ts_ns": [at(i + d) for i, d in enumerate(fast_ms)],
            "duration_ns": (fast_ms * MS).astype(np.int64)}
    slow = {"send_ts_ns": [at(1000 + 200 * i) for i in range(SLOW_WRITES)],
            "end_ts_ns": [at(1100 + 200 * i + i) for i in range(SLOW_WRITES)],
            "duration_ns": [(100 + i) * MS for i in range(SLOW_WRITES)],
            "unique": [2 * i + 2 for i in range(SLOW_WRITES)]}

    def wait_rows(ms_per_path: dict[str, np.ndarray]) -> dict:
        ms = np.concatenate(list(ms_per_path.values()))
        return {"ts_ns": [at(i) for i in range(len(ms))], "duration_ns": (ms * MS).astype(np.int64),
                "stack_id": np.concatenate([np.full(len(v), STACK_IDS[p])
                                            for p, v in ms_per_path.items()]),
                "pid": 100, "tgid": 100, "ino": 10}

    fast_waits = wait_rows({p: rng.uniform(1, 3, FAST_WAITS) for p in ("fsync", "close")})
    slow_waits = wait_rows({p: np.array([200.0, 300.0, 400.0]) for p in ("fsync", "close")})
    meta = make_meta(row_threshold_ms={"requests": 50.0, "waits": 50.0})
    return write_capture(folder, meta, requests=slow, waits=slow_waits, stacks=stacks_table(),
                         counted_only={"requests": fast, "waits": fast_waits})


@pytest.fixture(scope="module")
def fast_and_slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fast_and_slow(tmp_path_factory.mktemp("cap") / "c")


def test_requests_count_every_write_not_the_rows(fast_and_slow: Path) -> None:
    cap = load_capture(fast_and_slow)
    assert len(cap.table("requests")) == SLOW_WRITES
    write = requests_by_opcode(cap).set_index("opcode_name").loc["WRITE"]
    assert write["count"] == FAST_WRITES + SLOW_WRITES and write["rows"] == SLOW_WRITES
    entry = cap.meta["histograms"]["requests"][0]
    assert write["count"] == entry["count"] and write["max_ms"] == entry["max_ns"] / MS == 109
    assert 0.2 <= write["p50_ms"] <= 0.4 * (1 + RELATIVE_ERROR)
    assert write["p90_ms"] < 1 and write["p99_ms"] < 1  # 99% are fast
    assert write["percentile_error_pct"] == RELATIVE_ERROR * 100
    assert write["mean_ms"] == pytest.approx(entry["total_ns"] / entry["count"] / MS)
    assert write["bytes"] == (FAST_WRITES + SLOW_WRITES) * 4096
    totals = request_totals(cap).set_index("opcode_name").loc["WRITE"]
    assert totals["count"] == FAST_WRITES + SLOW_WRITES and totals["rows"] == SLOW_WRITES
    assert totals["counted_only"] == FAST_WRITES and totals["max_ms"] == 109


def test_waits_count_every_wait_per_path(fast_and_slow: Path) -> None:
    cap = load_capture(fast_and_slow)
    assert len(waits(cap)) == 2 * SLOW_WAITS
    paths = wait_paths(cap).set_index("path")
    for path in ("fsync", "close"):
        row = paths.loc[path]
        assert row["count"] == FAST_WAITS + SLOW_WAITS and row["rows"] == SLOW_WAITS
        assert 1 <= row["p50_ms"] <= 3 * (1 + RELATIVE_ERROR) and row["max_ms"] == 400
        assert row["p99_ms"] <= 3 * (1 + RELATIVE_ERROR)  # rank 297 of 300: the last fast one
        assert row["bdi"] == "0:52" and row["mount"] == "/mnt/fusewb"
    weights = stack_weights(cap)  # the flame graph's: every wait too
    assert weights.groupby("path")["count"].sum().to_dict() == {"fsync": 300, "close": 300}


def test_reports_state_the_counts_the_error_and_the_rows(fast_and_slow: Path,
                                                       tmp_path: Path) -> None:
    cap = load_capture(fast_and_slow)
    report = build_report(cap)
    assert report["host_totals"][0]["requests"] == 1000
    assert report["host_totals"][0]["waits"] == 600
    assert report["histograms"]["error_text"] == ERROR_TEXT
    data = json.loads(render_json(report))
    assert {r["opcode_name"]: r["count"] for r in data["requests_by_opcode"]} == {"WRITE": 1000}
    text = render_text(report)
    assert "rows (flags, single waits and requests, timelines) exist for waits of 50 ms or " \
        "more, requests of 50 ms or more and those still going on at the end" in text
    assert text.count(ERROR_TEXT) == 2
    line = next(x for x in text.splitlines() if x.strip().startswith("WRITE "))
    assert line.split()[:3] == ["WRITE", "1000", "10"]
    html = render_report(fast_and_slow, "html", out=tmp_path / "r.html").text
    assert ERROR_TEXT in html and "waits of 50 ms or more" in html
    assert "<h2>Timeline</h2>" in html and "<h2>Where tasks waited</h2>" in html
    under = build_report(cap, threshold_ms=10)
    assert any("under the capture's row threshold" in n for n in under["row_notes"])


def test_flags_see_the_slow_rows(fast_and_slow: Path) -> None:
    stalled = flags(load_capture(fast_and_slow)).query("flag == 'STALLED_REQUEST'").iloc[0]
    assert stalled["count"] == SLOW_WRITES and stalled["duration_ms"] == 109


def test_rows_newer_than_the_histograms_still_count(tmp_path: Path) -> None:
    """A tracer killed after its last flush: rows hold more than the histograms counted."""
    folder = _fast_and_slow(tmp_path / "c")
    meta = json.loads((folder / "meta.json").read_text())
    meta["histograms"]["requests"] = []
    meta["complete"] = False
    (folder / "meta.json").write_text(json.dumps(meta))
    write = requests_by_opcode(load_capture(folder)).set_index("opcode_name").loc["WRITE"]
    assert write["count"] == write["rows"] == SLOW_WRITES and write["max_ms"] == 109


# --- captures written before the histograms ---------------------------------------------

def test_a_capture_before_the_histograms_analyses_as_before(tmp_path: Path) -> None:
    cap = load_capture(everything_capture(tmp_path / "c", version=1))
    assert "histograms" not in cap.meta and "row_threshold_ms" not in cap.meta
    paths = wait_paths(cap).set_index("path")
    assert paths.loc["fsync", "count"] == 2 and paths.loc["fsync", "p50_ms"] == 65
    assert (paths["percentile_error_pct"] == 0).all()
    write = requests_by_opcode(cap).set_index("opcode_name").loc["WRITE"]
    assert write["count"] == 3 and write["max_ms"] == 9000
    assert write["p50_ms"] == np.quantile([1, 200, 9000], 0.5)
    totals = request_totals(cap).set_index("opcode_name").loc["WRITE"]
    assert totals["count"] == 40 and totals["counted_only"] == 38
    report = build_report(cap)
    assert report["histograms"] == {"hosts": [], "percentile_error_pct": None, "error_text": None}
    assert report["capture"]["sources"][0]["row_threshold_ms"] is None
    assert ERROR_TEXT not in render_text(report)
    assert "captured before the in-kernel histograms (capture schema 1)" in render_text(report)


def test_a_fleet_of_old_and_new_captures(tmp_path: Path) -> None:
    everything_capture(tmp_path / "fleet" / "old", version=1, host="old")
    _fast_and_slow(tmp_path / "fleet" / "new")
    cap = load_capture(tmp_path / "fleet")
    by_opcode = requests_by_opcode(cap)
    counts = {(h, o): n for h, o, n in zip(by_opcode["host"], by_opcode["opcode_name"],
                                           by_opcode["count"])}
    assert counts[("old", "WRITE")] == 3 and counts[("synthetic", "WRITE")] == 1000
    errors = dict(zip(by_opcode["host"], by_opcode["percentile_error_pct"]))
    assert errors == {"old": 0.0, "synthetic": 6.25}


def test_histograms_of_another_bucket_layout_are_refused(tmp_path: Path) -> None:
    folder = _fast_and_slow(tmp_path / "c")
    meta = json.loads((folder / "meta.json").read_text())
    meta["histograms"]["sub_bits"] = histogram.SUB_BITS + 1
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CaptureError, match="another bucket layout") as caught:
        requests_by_opcode(load_capture(folder))
    assert "\n" not in str(caught.value)
