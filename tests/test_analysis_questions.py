"""The question functions over small synthetic captures: columns, figures, dtypes, hosts."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pandas as pd
import pytest

from fusewb.analysis import capture as capture_module
from fusewb.analysis.capture import CaptureError, MissingEventsError, load_capture
from fusewb.analysis.flagging import flags
from fusewb.analysis.requests import (
    fuse_requests,
    inflight_writeback,
    request_totals,
    requests_by_opcode,
)
from fusewb.analysis.synthetic import make_meta, synthetic_capture, write_capture
from fusewb.analysis.vm import dirty_throttling, migration_activity, reclaim_activity, vm_events
from fusewb.analysis.waiting import stack_paths, unseen_waits, wait_paths, waits
from fusewb.contract.errors import FusewbError
from fusewb.contract.histogram import RELATIVE_ERROR
from fusewb.contract.schema import TABLES
from tests.analysis_cases import at, clean_capture, everything_capture

QUESTIONS = [waits, wait_paths, stack_paths, unseen_waits, fuse_requests, requests_by_opcode,
             request_totals, inflight_writeback, dirty_throttling, vm_events, reclaim_activity,
             migration_activity]


@pytest.fixture(scope="module")
def cap(tmp_path_factory: pytest.TempPathFactory) -> capture_module.Capture:
    return load_capture(everything_capture(tmp_path_factory.mktemp("cap") / "c"))


@pytest.fixture(scope="module")
def cap_v1(tmp_path_factory: pytest.TempPathFactory) -> capture_module.Capture:
    """The same capture as fusewb wrote it before the in-kernel histograms."""
    return load_capture(everything_capture(tmp_path_factory.mktemp("cap") / "c", version=1))


def _documented_columns(fn: object) -> list[str]:
    doc = " ".join((fn.__doc__ or "").split())
    listed = re.sub(r"\([^)]*\)", "", doc.split("Columns:", 1)[1]).split(".", 1)[0]
    return [n.strip() for n in listed.split(",") if n.strip()]


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.__name__)
def test_docstring_lists_the_columns_and_requires(cap: capture_module.Capture, question) -> None:
    frame = question(cap)
    assert list(frame.columns) == _documented_columns(question)
    assert len(frame) > 0
    assert isinstance(question.REQUIRES, list)
    assert all(isinstance(n, str) for n in question.REQUIRES)


def test_waits_paths_and_categoricals(cap: capture_module.Capture) -> None:
    w = waits(cap)
    assert len(w) == 6 and w["t_s"].is_monotonic_increasing
    assert w["t_s"].iloc[0] == pytest.approx(0.1)
    for column in ("host", "comm", "bdi", "mount", "path", "source"):
        assert isinstance(w[column].dtype, pd.CategoricalDtype), column
    assert list(w["path"].astype(str)) == ["fsync", "fsync", "reclaim", "migration", "sync",
                                           "close"]
    per_path = wait_paths(cap).set_index("path")
    assert per_path.loc["fsync", "count"] == 2
    assert per_path.loc["fsync", "max_ms"] == pytest.approx(120)
    assert per_path.loc["migration", "ongoing"] == 1
    assert per_path.index[0] == "migration"  # worst first


def test_requests_and_inflight(cap: capture_module.Capture, cap_v1: capture_module.Capture
                               ) -> None:
    by_opcode = requests_by_opcode(cap).set_index("opcode_name")
    write = by_opcode.loc["WRITE"]
    # 40 ended in the kernel's histogram (2 with rows) and the unanswered one (a row)
    assert write["count"] == 41 and write["rows"] == 3 and write["ongoing"] == 1
    assert write["bytes"] == 41 * 65536 and write["max_ms"] == pytest.approx(9000)
    assert write["total_ms"] == pytest.approx(1 + 200 + 38 * 0.5 + 9000)
    assert write["percentile_error_pct"] == RELATIVE_ERROR * 100
    assert write["p50_ms"] == pytest.approx(0.5, rel=RELATIVE_ERROR)
    assert by_opcode.loc["GETATTR", "count"] == 1
    old = requests_by_opcode(cap_v1).set_index("opcode_name")  # rows only, exact
    assert old.loc["WRITE", "count"] == old.loc["WRITE", "rows"] == 3
    assert old.loc["WRITE", "bytes"] == 3 * 65536 and old.loc["WRITE", "p50_ms"] == 200
    assert old.loc["WRITE", "percentile_error_pct"] == 0
    timeline = inflight_writeback(cap, bin_ms=100).set_index("t_s")
    assert timeline.loc[0.2, "inflight_writes"] == 1  # the 200 ms WRITE from 200 to 400 ms
    assert timeline.loc[0.0, "inflight_writes"] == 1  # the 1 ms WRITE at 50 ms
    assert timeline.loc[0.5, "inflight_writes"] == 0
    assert timeline["inflight_writes"].iloc[-1] == 1  # the unanswered one, to the end
    assert timeline.loc[0.5, "waiting_tasks"] == 1  # the ongoing migration wait


def test_kernel_request_totals_and_unseen_waiters(cap: capture_module.Capture,
                                                  cap_v1: capture_module.Capture) -> None:
    totals = request_totals(cap).set_index("opcode_name")  # from the histograms
    assert totals.loc["WRITE", "count"] == 40 and totals.loc["WRITE", "rows"] == 2
    assert totals.loc["WRITE", "counted_only"] == 38
    assert totals.loc["WRITE", "mean_ms"] == pytest.approx(220 / 40)
    assert totals.loc["WRITE", "max_ms"] == 200
    old = request_totals(cap_v1).set_index("opcode_name")  # from the counters
    assert old.loc["WRITE", "count"] == 40 and old.loc["WRITE", "rows"] == 2
    assert old.loc["WRITE", "counted_only"] == 38 and old.loc["WRITE", "mean_ms"] == 6
    unseen = unseen_waits(cap).iloc[0]
    assert unseen["comm"] == "jbd2/vda1-8" and unseen["path"] == "fsync" and not unseen["fuse"]
    assert unseen["duration_ms"] == pytest.approx(10_000) and unseen["ongoing"]


def test_vm_questions(cap: capture_module.Capture) -> None:
    throttle = dirty_throttling(cap).iloc[0]
    assert throttle["pauses"] == 3 and throttle["pause_ms_total"] == 200
    assert throttle["max_ratio"] == "1" and throttle["mount"] == "/mnt/fusewb"
    reclaim = reclaim_activity(cap).set_index("kind")
    assert reclaim.loc["vmscan_throttled", "events"] == 3
    assert reclaim.loc["vmscan_throttled", "throttled_writeback"] == 2
    assert reclaim.loc["shrink_inactive", "nr_writeback"] == 7
    migration = migration_activity(cap).set_index("kind")
    assert migration.loc["migrate_pages", "failed"] == 2
    assert migration.loc["compaction", "max_ms"] == pytest.approx(3000)


def test_absent_table_is_empty_but_unrecorded_one_is_an_error(tmp_path: Path) -> None:
    cap = load_capture(clean_capture(tmp_path / "c"))  # probes include balance_dirty_pages
    assert dirty_throttling(cap).empty
    assert list(cap.table("throttle").columns) == ["host", *TABLES["throttle"].names]
    probes = [p for p in make_meta()["probes"] if "balance_dirty_pages" not in p]
    lacking = load_capture(clean_capture(tmp_path / "d", probes=probes))
    with pytest.raises(MissingEventsError, match="balance_dirty_pages"):
        dirty_throttling(lacking)


def test_the_pandas_api_raises_the_analysis_errors_not_clicks(tmp_path: Path) -> None:
    bad = clean_capture(tmp_path / "bad")
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(CaptureError, match="meta.json") as caught:
        flags(load_capture(bad))
    assert isinstance(caught.value, FusewbError)
    assert not isinstance(caught.value, click.ClickException)
    assert "\n" not in str(caught.value)
    with pytest.raises(CaptureError, match="no_capture_here"):
        load_capture(tmp_path / "no_capture_here")
    probes = [p for p in make_meta()["probes"] if "balance_dirty_pages" not in p]
    with pytest.raises(MissingEventsError) as missing:
        dirty_throttling(load_capture(clean_capture(tmp_path / "d", probes=probes)))
    assert isinstance(missing.value, FusewbError)
    assert not isinstance(missing.value, click.ClickException)


def test_folder_of_captures_has_a_host_column(tmp_path: Path) -> None:
    everything_capture(tmp_path / "fleet" / "a", host="alpha")
    clean_capture(tmp_path / "fleet" / "b", host="beta",
                  mounts=[{"mountpoint": "/srv/f", "bdi": "0:52", "connection": 52}])
    cap = load_capture(tmp_path / "fleet")
    assert cap.hosts == ["alpha", "beta"]
    w = waits(cap)
    assert set(w["host"].astype(str)) == {"alpha", "beta"}
    assert set(w.loc[w["host"] == "beta", "mount"].astype(str)) == {"/srv/f"}
    assert set(w.loc[w["host"] == "alpha", "mount"].astype(str)) == {"/mnt/fusewb"}
    raised = flags(cap)
    assert set(raised["host"].astype(str)) == {"alpha"}


def test_same_host_twice_is_disambiguated(tmp_path: Path) -> None:
    clean_capture(tmp_path / "runs" / "one")
    clean_capture(tmp_path / "runs" / "two")
    cap = load_capture(tmp_path / "runs")
    assert cap.hosts == ["synthetic/one", "synthetic/two"]
    assert len(waits(cap)) == 10


def test_synthetic_builder_parts_and_counts(tmp_path: Path) -> None:
    folder = synthetic_capture(tmp_path / "big", 5000, part_rows=2000, seed=3)
    assert len(list((folder / "waits").glob("part-*.parquet"))) == 3
    cap = load_capture(folder)
    assert len(cap.table("waits")) == cap.meta["tables"]["waits"] == 5000
    assert len(cap.table("requests")) == 5000
    assert set(waits(cap)["path"].astype(str)) == set(wait_paths(cap)["path"].astype(str))
    assert {"BLOCKED_WAIT", "STALLED_REQUEST", "SERVER_SELF_WAIT"} - set(
        flags(cap)["flag"].astype(str)) == {"SERVER_SELF_WAIT"}


def test_writer_temporary_files_are_ignored(tmp_path: Path) -> None:
    folder = clean_capture(tmp_path / "c")
    (folder / "waits" / ".part-000002.parquet.tmp").write_bytes(b"half a part")
    assert len(load_capture(folder).table("waits")) == 5


def test_write_capture_rows_and_columns_agree(tmp_path: Path) -> None:
    rows = [{"ts_ns": at(1), "duration_ns": 7 * 1_000_000}]
    columns = {"ts_ns": [at(1)], "duration_ns": [7 * 1_000_000]}
    a = load_capture(write_capture(tmp_path / "a", waits=rows)).table("waits")
    b = load_capture(write_capture(tmp_path / "b", waits=columns)).table("waits")
    pd.testing.assert_frame_equal(a, b)


def test_wait_without_stack_or_known_mount(tmp_path: Path) -> None:
    folder = write_capture(tmp_path / "c", waits={"ts_ns": [at(5)], "duration_ns": [80 * 10**6],
                                                  "stack_id": [-1], "bdi": ["0:99"]})
    row = waits(load_capture(folder)).iloc[0]
    assert row["path"] == "other" and row["stack"] == "(no stack)" and row["mount"] == "?"


def test_package_exports_questions() -> None:
    import fusewb.analysis as package

    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert package.flags is flags and package.waits is waits  # functions, not modules


def test_page_states_over_time_and_peaks(tmp_path: Path) -> None:
    """meta vmstat samples: a 6.1 capture has nr_writeback_temp, a 6.18 one lacks it (null)."""
    from fusewb.analysis.report import build_report, render_text
    from fusewb.analysis.vm import page_state_peaks, page_states
    from fusewb.tracers.kernel_state import add_vmstat_sample, vmstat_sample

    series: dict = {}
    start = make_meta()["start_monotonic_ns"]
    for i, (dirty, temp) in enumerate([(10, 0), (300, 256), (40, 16)]):
        add_vmstat_sample(series, start + i * 10**9, {"nr_dirty": dirty, "nr_writeback": 1, "nr_writeback_temp": temp})
    counters = {"kprobe.fuse_writepage.count": 4, "kprobe.fuse_writepage.total_ns": 8_000_000,
                "kprobe.fuse_writepage.max_ns": 5_000_000, "kprobe.migrate_pages.count": 0}
    old = load_capture(write_capture(tmp_path / "old", {"vmstat": series, "counters": counters}))
    from fusewb.analysis.vm import writeback_functions
    calls = writeback_functions(old)
    assert calls[["function", "count", "mean_ms", "max_ms"]].values.tolist() == [["fuse_writepage", 4, 2.0, 5.0]]
    assert "fuse_writepage: 4 calls, mean 2" in render_text(build_report(old))
    states = page_states(old)
    assert list(states["t_s"]) == [0.0, 1.0, 2.0] and list(states["nr_writeback_temp"]) == [0, 256, 16]
    peaks = page_state_peaks(old)
    assert peaks.loc[0, "nr_dirty_max"] == 300 and peaks.loc[0, "nr_writeback_temp_max"] == 256
    new_series: dict = {}
    add_vmstat_sample(new_series, start, {"nr_dirty": 5, "nr_writeback": 2})
    new = load_capture(write_capture(tmp_path / "new", {"vmstat": new_series}))
    assert page_state_peaks(new)["nr_writeback_temp_max"].isna().all()
    assert "no nr_writeback_temp" in render_text(build_report(new))
    assert "nr_writeback_temp 256" in render_text(build_report(old))
    assert page_states(load_capture(write_capture(tmp_path / "none"))).empty
    assert set(vmstat_sample()) >= {"nr_dirty", "nr_writeback"}
