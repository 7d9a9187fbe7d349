"""Flags over small synthetic captures with known answers: every flag, and none when healthy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusewb.analysis.capture import load_capture
from fusewb.analysis.findings import FLAG_COLUMNS, FLAG_NAMES, FLAGS, parse_flag_names
from fusewb.analysis.flagging import flags
from fusewb.analysis.report import REPORT_QUESTIONS, report_needs
from fusewb.analysis.rules import Flag, flag_needs
from fusewb.analysis.scan import scan
from fusewb.analysis.synthetic import make_meta, write_capture
from fusewb.analysis.vm import dirty_throttling
from tests.analysis_cases import SERVER_TGID, STACK_IDS, at, clean_capture, everything_capture

MS = 1_000_000


@pytest.fixture(scope="module")
def raised(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    folder = everything_capture(tmp_path_factory.mktemp("cap") / "everything")
    return flags(load_capture(folder), threshold_ms=50)


def _only(frame: pd.DataFrame, flag: str) -> pd.DataFrame:
    return frame[frame["flag"] == flag]


def test_every_flag_is_raised(raised: pd.DataFrame) -> None:
    assert list(raised.columns) == FLAG_COLUMNS
    assert set(raised["flag"].astype(str)) == set(FLAG_NAMES)
    assert raised.attrs["not_checked"] == {}
    assert raised["mechanism"].str.len().gt(40).all()


def test_blocked_wait(raised: pd.DataFrame) -> None:
    blocked = _only(raised, "BLOCKED_WAIT").set_index("pid")
    assert sorted(blocked.index) == [100, 102, SERVER_TGID + 1]  # 120, 3000 (ongoing), 80 ms
    assert blocked.loc[100, "duration_ms"] == pytest.approx(120)
    assert blocked.loc[100, "path"] == "fsync" and blocked.loc[100, "ino"] == 11
    assert blocked.loc[100, "mount"] == "/mnt/fusewb" and blocked.loc[100, "bdi"] == "0:52"
    assert "fuse_fsync" in blocked.loc[100, "evidence"]
    assert blocked.loc[102, "ongoing"] and blocked.loc[102, "severity"] == "critical"
    assert not blocked.loc[100, "ongoing"] and blocked.loc[100, "severity"] == "medium"


@pytest.mark.parametrize(("flag", "pid", "path", "frame"), [
    ("RECLAIM_WAIT", 101, "reclaim", "shrink_folio_list"),
    ("MIGRATION_WAIT", 102, "migration", "migrate_pages"),
    ("SYNC_WAIT", 103, "sync", "wait_sb_inodes"),
])
def test_path_waits_any_duration(raised: pd.DataFrame, flag: str, pid: int, path: str,
                                 frame: str) -> None:
    rows = _only(raised, flag)
    assert list(rows["pid"]) == [pid]
    row = rows.iloc[0]
    assert row["path"] == path and frame in row["evidence"]
    assert row["duration_ms"] < 50 or row["ongoing"]  # raised below the threshold too


def test_ongoing_migration_wait_is_critical(raised: pd.DataFrame) -> None:
    row = _only(raised, "MIGRATION_WAIT").iloc[0]
    assert row["ongoing"] and row["severity"] == "critical"
    assert row["duration_ms"] == pytest.approx(3000)
    assert "still waiting" in row["evidence"]
    assert raised.iloc[0]["severity"] == "critical"  # most severe first


def test_server_self_wait(raised: pd.DataFrame) -> None:
    rows = _only(raised, "SERVER_SELF_WAIT")
    assert list(rows["tgid"]) == [SERVER_TGID]
    assert rows.iloc[0]["path"] == "close" and rows.iloc[0]["severity"] == "critical"


def test_stalled_request(raised: pd.DataFrame) -> None:
    rows = _only(raised, "STALLED_REQUEST")
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["count"] == 2  # the 200 ms WRITE and the unanswered one, not the slow GETATTR
    assert row["ongoing"] and row["severity"] == "critical"
    assert row["duration_ms"] == pytest.approx(9000)
    assert "1 never completed" in row["evidence"] and "unique=6" in row["evidence"]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("streamed_ms", [60, 1])
def test_stalled_write_known_only_to_kernel_counts(tmp_path: Path, streamed_ms: int,
                                                    version: int) -> None:
    """The slowest WRITE has no row (its event was lost): the kernel's maximum still raises it,
    from the histograms (version 2) or from the per-opcode counters before them (version 1)."""
    requests = {"send_ts_ns": [at(1)], "end_ts_ns": [at(1 + streamed_ms)],
                "duration_ns": [streamed_ms * MS], "end_tgid": [SERVER_TGID]}
    if version == 1:
        meta = make_meta(schema_version=1, counters={"requests.WRITE.count": 50,
                                                     "requests.WRITE.max_ns": 12_000 * MS})
        counted_only = None
    else:
        meta = make_meta(row_threshold_ms={"requests": 50.0, "waits": 50.0})
        counted_only = {"requests": {"send_ts_ns": [at(2)] * 49,
                                     "duration_ns": [MS] * 48 + [12_000 * MS]}}
    folder = write_capture(tmp_path / "c", meta, requests=requests, counted_only=counted_only)
    rows = _only(flags(load_capture(folder)), "STALLED_REQUEST")
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["duration_ms"] == pytest.approx(12_000) and row["severity"] == "high"
    assert "the kernel counted 50 WRITEs" in row["evidence"]
    assert row["bdi"] == "0:52" and row["mount"] == "/mnt/fusewb"
    if version == 2:
        assert "under the capture's row threshold of 50 ms, or its event was lost" \
            in row["evidence"]


def test_full_histogram_maps_make_an_incomplete_capture(tmp_path: Path) -> None:
    row = flags(load_capture(clean_capture(tmp_path / "c", counters={"hist_full": 4}))).iloc[0]
    assert row["flag"] == "INCOMPLETE_CAPTURE" and row["severity"] == "high"
    assert "4 ended waits or requests not counted in the histograms" in row["evidence"]


def test_probe_runs_the_kernel_skipped_make_an_incomplete_capture(tmp_path: Path) -> None:
    counters = {"missed_runs": 3, "missed.raw_tracepoint__fuse_request_end": 2,
                "missed.raw_tracepoint__fuse_request_send": 1, "missed.kp_fuse_flush": 0}
    row = flags(load_capture(clean_capture(tmp_path / "c", counters=counters))).iloc[0]
    assert row["flag"] == "INCOMPLETE_CAPTURE" and row["severity"] == "high"
    assert ("the kernel skipped 3 runs of fusewb's probes (raw_tracepoint__fuse_request_end 2, "
            "raw_tracepoint__fuse_request_send 1)") in row["evidence"], row["evidence"]


def test_dirty_throttle_totals(raised: pd.DataFrame) -> None:
    row = _only(raised, "DIRTY_THROTTLE").iloc[0]
    assert row["pid"] == 100 and row["count"] == 3
    assert row["total_ms"] == pytest.approx(200) and row["duration_ms"] == pytest.approx(200)
    assert "max 100 ms" in row["evidence"] and "max_ratio 1%" in row["evidence"]


def test_reclaim_throttle_only_with_writes_in_flight(raised: pd.DataFrame) -> None:
    rows = _only(raised, "RECLAIM_THROTTLE")
    assert list(rows["pid"]) == [90]  # not pid 92 (nothing in flight), not 91 (ISOLATED)
    assert rows.iloc[0]["duration_ms"] == pytest.approx(100)
    assert rows.iloc[0]["bdi"] == "0:52" and "1 FUSE WRITEs" in rows.iloc[0]["evidence"]


def test_incomplete_capture(raised: pd.DataFrame, tmp_path: Path) -> None:
    row = _only(raised, "INCOMPLETE_CAPTURE").iloc[0]
    assert "lost 3 events" in row["evidence"] and "waits 3" in row["evidence"]
    unclean = flags(load_capture(clean_capture(tmp_path / "c", complete=False)))
    assert list(unclean["flag"]) == ["INCOMPLETE_CAPTURE"]
    assert "complete=false" in unclean.iloc[0]["evidence"]


def test_missing_part_is_an_incomplete_capture(tmp_path: Path) -> None:
    folder = write_capture(tmp_path / "c", waits={"ts_ns": [at(i) for i in range(4)],
                                                  "duration_ns": [MS] * 4}, part_rows=2)
    (folder / "waits" / "part-000002.parquet").unlink()
    row = flags(load_capture(folder)).iloc[0]
    assert row["flag"] == "INCOMPLETE_CAPTURE" and row["severity"] == "high"
    assert "waits has 2 of the 4 rows" in row["evidence"]


def test_full_tracer_maps_make_an_incomplete_capture(tmp_path: Path) -> None:
    row = flags(load_capture(clean_capture(tmp_path / "c", counters={"pending_full": 7}))).iloc[0]
    assert row["flag"] == "INCOMPLETE_CAPTURE" and "7 waits or requests not tracked" in row[
        "evidence"]


def test_healthy_capture_raises_nothing(tmp_path: Path) -> None:
    result = flags(load_capture(clean_capture(tmp_path / "c")))
    assert result.empty and list(result.columns) == FLAG_COLUMNS
    assert result.attrs["not_checked"] == {}


def test_threshold_moves_blocked_wait(tmp_path: Path) -> None:
    cap = load_capture(everything_capture(tmp_path / "c"))
    assert len(_only(flags(cap, threshold_ms=100), "BLOCKED_WAIT")) == 2
    assert len(_only(flags(cap, threshold_ms=5000), "BLOCKED_WAIT")) == 0


def test_server_threads_from_meta_without_request_events(tmp_path: Path) -> None:
    probes = [p for p in make_meta()["probes"] if "fuse_request" not in p]
    wait = {"ts_ns": [at(10)], "duration_ns": [5 * MS], "pid": [SERVER_TGID + 2],
            "tgid": [SERVER_TGID], "comm": ["srv"], "stack_id": [STACK_IDS["page_mkwrite"]]}
    meta = make_meta(probes=probes, server_threads=[
        {"connection": 52, "tgid": SERVER_TGID, "pid": SERVER_TGID, "comm": "srv", "replies": 1}])
    folder = write_capture(tmp_path / "c", meta, waits=wait,
                           stacks={"stack_id": [STACK_IDS["page_mkwrite"]],
                                   "frames": [["folio_wait_writeback", "fuse_page_mkwrite"]]})
    result = flags(load_capture(folder))
    assert list(result["flag"]) == ["SERVER_SELF_WAIT"]  # bdi found from the connection
    assert set(result.attrs["not_checked"]) == {"STALLED_REQUEST", "RECLAIM_THROTTLE"}


def test_parse_flag_names() -> None:
    assert parse_flag_names("blocked_wait, SYNC_WAIT") == ["BLOCKED_WAIT", "SYNC_WAIT"]
    assert parse_flag_names(None) == []
    with pytest.raises(ValueError, match="NOPE"):
        parse_flag_names("SYNC_WAIT,NOPE")


@pytest.mark.parametrize(("error", "server"), [(-103, False), (-107, False), (0, True),
                                               (-5, True)])
def test_requests_ended_by_an_abort_do_not_make_a_server(tmp_path: Path, error: int,
                                                          server: bool) -> None:
    """An abort ends requests in the aborting task's context: that task is no server thread."""
    ender = 4242
    wait = {"ts_ns": [at(10)], "duration_ns": [5 * MS], "pid": [ender], "tgid": [ender],
            "stack_id": [STACK_IDS["fsync"]]}
    request = {"send_ts_ns": [at(1)], "end_ts_ns": [at(30)], "duration_ns": [29 * MS],
               "error": [error], "end_pid": [ender], "end_tgid": [ender], "end_comm": ["sh"]}
    folder = write_capture(tmp_path / "c", waits=wait, requests=request,
                           stacks={"stack_id": [STACK_IDS["fsync"]], "frames": [["fuse_fsync"]]})
    raised = set(flags(load_capture(folder))["flag"].astype(str))
    assert ("SERVER_SELF_WAIT" in raised) is server


def test_waiters_from_before_tracing(tmp_path: Path) -> None:
    fuse_frames = ["folio_wait_bit", "folio_wait_writeback", "__filemap_fdatawait_range",
                   "file_write_and_wait_range", "fuse_fsync", "do_fsync", "__x64_sys_fsync"]
    other_frames = ["folio_wait_bit", "folio_wait_writeback", "__filemap_fdatawait_range",
                    "file_write_and_wait_range", "ext4_sync_file", "do_fsync"]
    meta = make_meta(
        unseen_waiters=[
            {"pid": 700, "tgid": 700, "comm": "db", "frames": fuse_frames},
            {"pid": 701, "tgid": 701, "comm": "logger", "frames": other_frames},
            {"pid": SERVER_TGID + 5, "tgid": SERVER_TGID, "comm": "srv", "frames": fuse_frames},
        ],
        server_threads=[{"connection": 52, "bdi": "0:52", "tgid": SERVER_TGID,
                         "pid": SERVER_TGID, "comm": "srv", "replies": 9}],
    )
    cap = load_capture(write_capture(tmp_path / "c", meta))
    result = flags(cap)
    blocked = _only(result, "BLOCKED_WAIT")
    assert sorted(blocked["pid"]) == [700, SERVER_TGID + 5]  # not the ext4 waiter
    row = blocked.set_index("pid").loc[700]
    assert row["ongoing"] and row["severity"] == "critical" and row["path"] == "fsync"
    assert row["duration_ms"] == pytest.approx(10_000) and pd.isna(row["bdi"])
    assert "before tracing" in row["evidence"]
    assert list(_only(result, "SERVER_SELF_WAIT")["pid"]) == [SERVER_TGID + 5]


def test_server_throttled_in_reclaim_is_a_self_wait(tmp_path: Path) -> None:
    """6.16+: reclaim skips FUSE folios but throttles on writeback; the server throttled that
    way while its own WRITEs are in flight waits on itself."""
    request = {"send_ts_ns": [at(10)], "end_ts_ns": [at(900)], "duration_ns": [890 * MS],
               "error": [0], "end_pid": [SERVER_TGID + 1], "end_tgid": [SERVER_TGID],
               "end_comm": ["fusewb-server"]}
    vm = {"ts_ns": [at(100), at(200), at(300)], "kind": ["vmscan_throttled"] * 3,
          "pid": [SERVER_TGID + 1, SERVER_TGID + 1, 555], "tgid": [SERVER_TGID, SERVER_TGID, 555],
          "comm": ["fusewb-server", "fusewb-server", "writer"], "reason": [1, 1, 1],
          "usec_delayed": [600_000, 600_000, 100_000]}
    folder = write_capture(tmp_path / "c", requests=request, vm=vm,
                           waits={"ts_ns": [at(5)], "duration_ns": [MS]})
    result = flags(load_capture(folder))
    self_wait = _only(result, "SERVER_SELF_WAIT")
    assert list(self_wait["pid"]) == [SERVER_TGID + 1]  # not the unrelated writer
    row = self_wait.iloc[0]
    assert row["path"] == "reclaim" and row["severity"] == "critical"
    assert row["duration_ms"] == pytest.approx(1200)
    assert "server itself was throttled in reclaim" in row["evidence"]
    assert sorted(_only(result, "RECLAIM_THROTTLE")["pid"]) == [555, SERVER_TGID + 1]


# A flag declared here, outside findings.py: one declaration, run by the same engine.
LONG_CLOSE = Flag(
    "LONG_CLOSE", "a close(2) waited on FUSE writeback for 50 ms or more", ("waits",),
    "close flushes the inode and waits for the server's WRITEs",
    severity=lambda rows, threshold_ms: np.where(rows["duration_ms"] >= 1000, "high", "low"),
    evidence=lambda rows, threshold_ms: [f"{n} close wait(s), worst {d:.0f} ms"
                                         for n, d in zip(rows["count"], rows["duration_ms"])],
    table="waits", keys=("host", "pid"), carry=("comm", "bdi", "mount"),
    select=lambda w, threshold_ms, servers: ((w["path"] == "close")
                                             & (w["duration_ms"] >= threshold_ms)).to_numpy(),
)
MANY_PAUSES = Flag(
    "MANY_PAUSES", "three or more dirty throttling pauses of one task", ("throttle",),
    "balance_dirty_pages paused this task again and again",
    severity=lambda rows, threshold_ms: "low",
    evidence=lambda rows, threshold_ms: [f"{n} pauses" for n in rows["count"]],
    rows=lambda cap, scan, threshold_ms: (
        lambda t: t[t["count"] >= 3])(dirty_throttling(cap).rename(columns={"pauses": "count"})
                                      .assign(ongoing=False)),
)
NEEDS_NOTHING_RECORDED = Flag(
    "NEVER", "never", ("no_such_table",), "a flag whose events no capture has",
    severity=lambda rows, threshold_ms: "low", evidence=lambda rows, threshold_ms: [],
    rows=lambda cap, scan, threshold_ms: pd.DataFrame(),
)


@pytest.mark.parametrize("engine", ["pandas", "streaming", "dask"])
def test_a_flag_is_one_declaration(tmp_path: Path, engine: str) -> None:
    folder = everything_capture(tmp_path / "c")
    declared = [LONG_CLOSE, MANY_PAUSES, NEEDS_NOTHING_RECORDED]
    cap = load_capture(folder)
    raised = flags(cap, 50, scan(cap, 50, engine=engine, declared=declared), declared)
    assert list(raised.columns) == FLAG_COLUMNS
    assert raised.attrs["not_checked"] == {"NEVER": "the capture has no no_such_table events"}
    assert list(raised["flag"].astype(str)) == ["LONG_CLOSE", "MANY_PAUSES"]
    close = raised.iloc[0]
    assert close["pid"] == SERVER_TGID + 1 and close["comm"] == "fusewb-server"
    assert close["severity"] == "low" and close["duration_ms"] == pytest.approx(80)
    assert close["evidence"] == "1 close wait(s), worst 80 ms" and not close["ongoing"]
    assert close["mount"] == "/mnt/fusewb" and close["bdi"] == "0:52"
    assert pd.isna(close["ino"]) and pd.isna(close["path"])  # not among its keys or carry
    assert close["mechanism"] == LONG_CLOSE.mechanism
    pauses = raised.iloc[1]
    assert pauses["pid"] == 100 and pauses["count"] == 3 and pauses["evidence"] == "3 pauses"


def test_what_a_report_needs_comes_from_the_declarations() -> None:
    needed = report_needs()
    for flag in FLAGS:
        assert set(flag.needs) <= set(needed), flag.name
    for question in REPORT_QUESTIONS:
        assert set(question.REQUIRES) <= set(needed), question.__name__
    assert flag_needs([LONG_CLOSE, MANY_PAUSES]) == ["waits", "throttle"]
    assert "vm:vmscan_throttled" in needed and "stacks" in needed


def test_a_report_names_the_events_its_capture_did_not_record(tmp_path: Path) -> None:
    from fusewb.analysis.report import build_report, render_text
    from fusewb.analysis.synthetic import DEFAULT_PROBES

    without_vm = [p for p in DEFAULT_PROBES if not any(m in p for m in ("vmscan", "migrate", "compaction"))]
    assert len(without_vm) < len(DEFAULT_PROBES)
    cap = load_capture(write_capture(tmp_path / "cap", make_meta(probes=without_vm)))
    report = build_report(cap)
    assert report["not_recorded"] and all(n.startswith("vm") for n in report["not_recorded"])
    assert "vm:vmscan_throttled" in report["not_recorded"]
    assert "did not record" in render_text(report)
    full = build_report(load_capture(write_capture(tmp_path / "full", make_meta())))
    assert full["not_recorded"] == []
