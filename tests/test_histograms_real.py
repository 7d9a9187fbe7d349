"""The in-kernel histograms against the truth, on the real kernel (and in the 6.1 guest).

The fixture answers most WRITEs at once and a known share after 100 ms (``latency_fraction``),
counting in its own process how many it saw and how many it delayed. The tracer must count every
WRITE in its histogram (the server's count), stream a row for exactly the slow ones, and, when
every request is a row (``all_requests``), give percentiles within the stated bucket error of
the exact ones computed from those rows. Waits likewise: with threshold 0 every wait is a row,
and the histogram holds the same waits under the same stacks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fusewb.contract.histogram import RELATIVE_ERROR, Histogram, bucket_bounds
from fusewb.fixtures.faults import Faults
from tests.fixture_helpers import mounted
from tests.test_tracer import (MSYNC_LOAD, WRITE_FSYNC_LOAD, _prepare, finish, load, read_table,
                               skipped_request_runs, tracing)

SLOW_MS = 100.0
SLOW_FRACTION = 0.03  # of 512 WRITEs: 15 slow ones on average
WRITE_MIB = 2  # in 4 KiB write(2)s without writeback cache: 512 WRITEs
QUANTILES = (0.5, 0.9, 0.99, 1.0)


def _meta(capture: Path) -> dict:
    return json.loads((capture / "meta.json").read_text())


def _write_histogram(meta: dict) -> Histogram:
    merged = Histogram()
    for entry in meta["histograms"]["requests"]:
        if entry["opcode_name"] == "WRITE":
            merged += Histogram.from_meta(entry)
    return merged


def _count_in(histogram: Histogram, lowest: int, highest: int) -> int:
    """Values whose bucket lies in [lowest, highest) ns: whole buckets only."""
    return sum(n for index, n in histogram.buckets.items()
               if bucket_bounds(index)[0] >= lowest and bucket_bounds(index)[1] <= highest)


def _assert_within_error(histogram: Histogram, exact_ns: np.ndarray) -> None:
    """Each quantile from the buckets is within the stated error of the exact nearest-rank one."""
    assert histogram.count == len(exact_ns)
    assert histogram.max_ns == exact_ns.max() and histogram.total_ns == exact_ns.sum()
    for q in QUANTILES:
        truth = float(np.quantile(exact_ns, q, method="inverted_cdf"))
        got = histogram.quantile_ns(q)
        assert abs(got - truth) <= RELATIVE_ERROR * truth + 1, (q, got, truth)


def _write_load(mountpoint: str, name: str) -> None:
    finish(load(WRITE_FSYNC_LOAD, f"{mountpoint}/{name}", WRITE_MIB, 4096), timeout=240)


def _traced_writes(fx, capture: Path, **options) -> tuple[int, int]:
    """The write load traced into ``capture``: (WRITEs the server answered, those it delayed)."""
    before = fx.status()["writes"]
    with tracing(capture, fx.mountpoint, **options) as tracer:
        _write_load(fx.mountpoint, capture.name)
        tracer.stop()
    after = fx.status()["writes"]
    return after["completed"] - before["completed"], after["delayed"] - before["delayed"]


def test_every_write_counted_rows_only_for_the_slow_ones(tmp_path: Path) -> None:
    """Default: the histogram counts every WRITE, rows are the slow ones. --all-requests: a row
    for each, and the histogram's percentiles within the stated error of the rows' exact ones."""
    _prepare()
    faults = Faults(latency_ms=SLOW_MS, latency_fraction=SLOW_FRACTION)
    with mounted(tmp_path / "mnt", faults, writeback_cache=False) as fx:
        seen, delayed = _traced_writes(fx, tmp_path / "slow-rows")
        all_seen, all_delayed = _traced_writes(fx, tmp_path / "all-rows", all_requests=True)

    meta = _meta(tmp_path / "slow-rows")
    assert meta["row_threshold_ms"] == {"requests": 50.0, "waits": 50.0}
    writes = _write_histogram(meta)
    assert seen >= 256 and delayed >= 1
    # every WRITE the server answered, fast or slow, but for probe runs the kernel skipped
    assert seen - skipped_request_runs(meta) <= writes.count <= seen
    rows = read_table(tmp_path / "slow-rows", "requests")
    rows = rows[(rows.opcode_name == "WRITE") & ~rows.ongoing]
    assert (rows.duration_ns >= 50e6).all()
    assert rows.comm.str.startswith("python").all()  # the writer: its comm read from its task
    assert (rows.duration_ns >= SLOW_MS * 1e6).sum() >= delayed  # every delayed one is a row
    threshold = int(50e6)
    assert _count_in(writes, threshold, 1 << 62) <= len(rows) <= writes.count - _count_in(writes, 0, threshold)
    assert writes.quantile_ns(0.5) < 50e6  # the median is a fast WRITE: not biased by the rows
    assert meta["counters"]["hist_full"] == 0 and meta["lost_events"]["total"] == 0

    meta = _meta(tmp_path / "all-rows")
    assert meta["row_threshold_ms"]["requests"] == 0.0
    rows = read_table(tmp_path / "all-rows", "requests")
    assert rows.ongoing.sum() <= skipped_request_runs(meta)  # an end the kernel did not run
    rows = rows[~rows.ongoing]
    for entry in meta["histograms"]["requests"]:  # every opcode, every connection
        mine = rows[(rows.opcode == entry["opcode"]) & (rows.connection == entry["connection"])]
        _assert_within_error(Histogram.from_meta(entry), mine.duration_ns.to_numpy(np.int64))
        assert entry["errors"] == int((mine.error != 0).sum())
    assert all_seen - skipped_request_runs(meta) <= _write_histogram(meta).count <= all_seen
    assert (rows[rows.opcode_name == "WRITE"].duration_ns >= SLOW_MS * 1e6).sum() >= all_delayed >= 1


def test_wait_histogram_holds_every_wait_under_its_stack(tmp_path: Path) -> None:
    _prepare()
    with mounted(tmp_path / "mnt", Faults(latency_ms=20)) as fx:
        capture = tmp_path / "waits"
        with tracing(capture, fx.mountpoint, threshold_ms=0) as tracer:
            finish(load(MSYNC_LOAD, f"{fx.mountpoint}/m.dat", 2))
            tracer.stop()
    meta = _meta(capture)
    assert meta["row_threshold_ms"] == {"requests": 0.0, "waits": 0.0}
    waits = read_table(capture, "waits")
    waits = waits[~waits.ongoing]
    entries = meta["histograms"]["waits"]
    assert entries and sum(e["count"] for e in entries) == len(waits) > 0
    stacks = set(read_table(capture, "stacks").stack_id)
    for entry in entries:
        mine = waits[(waits.bdi == entry["bdi"]) & (waits.stack_id == entry["stack_id"])]
        _assert_within_error(Histogram.from_meta(entry), mine.duration_ns.to_numpy(np.int64))
        assert entry["stack_id"] < 0 or entry["stack_id"] in stacks
