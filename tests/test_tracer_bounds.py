"""Bounded captures for real: ``fusewb trace --max-size`` on a real FUSE WRITE load keeps the
newest data within the bound and counts what it dropped, and without ``--max-size`` the tracer
stops by itself, whole, before a small real file system (tmpfs) is full."""

from __future__ import annotations

import os
import signal

import pandas as pd

from tests.fixture_helpers import mounted, wait_until
from tests.test_tracer import load
from tests.test_tracer_faults import (
    INCOMPLETE, WRITE_LOOP, Trace, _prepare, analyzed_flags, assert_detached, assert_exit,
    assert_no_tmp, meta, small_tmpfs, stop_load,
)


BOUND = 1 << 20
FILL_S = 90.0  # bounded wait for the load to fill the bound or the file system


def _on_disk(capture) -> int:
    return sum(p.stat().st_size for p in capture.rglob("*") if p.is_file())


def _dropped_parts(capture) -> int:
    try:
        return sum(meta(capture)["dropped"]["parts"].values())
    except (OSError, ValueError, KeyError):
        return 0


def test_max_size_keeps_the_newest_data_within_the_bound(tmp_path) -> None:
    before = _prepare()
    capture = tmp_path / "cap"
    sizes: list[int] = []
    with mounted(tmp_path / "mnt", writeback_cache=False) as fx:
        trace = Trace(["--all-requests", "--mount", fx.mountpoint, "--max-size", "1M", "-o", str(capture)],
                      tmp_path / "stdout")
        writer = None
        try:
            trace.require_ready()
            writer = load(WRITE_LOOP, f"{fx.mountpoint}/w.dat", FILL_S, 0)
            filled = wait_until(lambda: sizes.append(_on_disk(capture)) or
                                _dropped_parts(capture) >= 3, FILL_S, 0.2)
            assert filled, f"nothing dropped; on disk {sizes[-1:]}; {trace.stderr[-2000:]}"
            code = trace.stop(signal.SIGTERM)
        finally:
            trace.kill()
            if writer is not None:
                stop_load(writer)
    assert_exit(trace, code, 0)
    final = meta(capture)
    dropped = final["dropped"]
    assert final["complete"] is True and final["max_size_bytes"] == BOUND
    assert dropped["parts"]["requests"] >= 3 and dropped["rows"]["requests"] > 0
    assert "stacks" not in dropped["parts"]
    # Over the bound by at most the parts of one flush (about a second of rows).
    biggest = max(p.stat().st_size for p in capture.rglob("part-*.parquet"))
    assert max(sizes) <= BOUND + 5 * biggest, (max(sizes), biggest)
    assert _on_disk(capture) <= BOUND + 5 * biggest
    requests = pd.read_parquet(capture / "requests")
    assert len(requests) == final["tables"]["requests"]
    assert not (capture / "requests" / "part-000001.parquet").exists()
    assert requests.send_ts_ns.min() > dropped["until_monotonic_ns"] - 10**9  # newest kept
    assert any(line.startswith("--max-size dropped the") for line in trace.lines), trace.stderr
    assert_no_tmp(capture)
    assert INCOMPLETE in analyzed_flags(capture)
    assert_detached(before, trace)


def test_without_max_size_tracing_stops_whole_before_the_disk_is_full(tmp_path) -> None:
    before = _prepare()
    with small_tmpfs(tmp_path / "small", size="3m") as small, \
            mounted(tmp_path / "mnt", writeback_cache=False) as fx:
        capture = small / "cap"
        trace = Trace(["--all-requests", "--mount", fx.mountpoint, "-o", str(capture)], tmp_path / "stdout")
        writer = None
        try:
            trace.require_ready()
            writer = load(WRITE_LOOP, f"{fx.mountpoint}/w.dat", FILL_S, 0)
            code = trace.wait(FILL_S + 30)
        finally:
            trace.kill()
            if writer is not None:
                stop_load(writer)
        assert_exit(trace, code, 2, "tracing stopped before it was full")
        left = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
        assert left > 0  # never full: every write of the capture succeeded
        assert "meta.json complete=true" in trace.lines[-1]
        final = meta(capture)
        assert final["complete"] is True and final["stopped_early"].startswith("only ")
        assert final["dropped"]["parts"] == {}
        assert len(pd.read_parquet(capture / "requests")) == final["tables"]["requests"] > 0
        assert_no_tmp(capture)
        assert INCOMPLETE in analyzed_flags(capture)
    assert_detached(before, trace)
