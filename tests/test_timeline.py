"""The rows the timeline draws: per host the longest waits and requests, read part by part,
equal to the longest of the whole tables."""

from __future__ import annotations

from pathlib import Path

from fusewb.analysis.capture import load_capture
from fusewb.analysis.requests import fuse_requests
from fusewb.analysis.synthetic import synthetic_capture
from fusewb.analysis.timeline import longest_requests, longest_waits
from fusewb.analysis.waiting import waits


def test_longest_rows_read_part_by_part_equal_the_whole_tables(tmp_path: Path) -> None:
    for host in ("a", "b"):
        synthetic_capture(tmp_path / "fleet" / host, n_waits=3000, part_rows=700, host=host,
                          seed=len(host) + ord(host))
    cap = load_capture(tmp_path / "fleet")
    for drawn, whole, key in ((longest_waits(cap, 50), waits(cap), "ts_ns"),
                              (longest_requests(cap, 50), fuse_requests(cap), "send_ts_ns")):
        expected = whole.groupby(whole["host"].astype(object), group_keys=False).apply(
            lambda rows: rows.nlargest(50, "duration_ns", keep="all"))
        assert len(drawn) == 100 and set(drawn.columns) <= set(whole.columns)
        for host in ("a", "b"):
            mine = drawn[drawn["host"] == host]
            assert sorted(mine["duration_ns"]) == sorted(
                expected[expected["host"] == host]["duration_ns"])[-50:]
        assert drawn[["host", key]].equals(
            drawn.sort_values(["host", key], kind="stable")[["host", key]])
