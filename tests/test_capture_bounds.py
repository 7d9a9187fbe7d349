"""Bounded captures without a kernel: ``CaptureWriter(max_size=...)`` drops the oldest parts and
counts them, the analysis reports the dropped window, ``--max-size`` parses sizes, and the
status line of ``fusewb trace`` stays on one line on a terminal.

The tracer's own disk-full stop and ``--max-size`` on a real trace are in test_tracer_bounds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fusewb.analysis.capture import load_capture
from fusewb.analysis.flagging import flags
from fusewb.analysis.synthetic import make_meta, write_capture
from fusewb.cli import cli
from fusewb.tracers.capture import CaptureWriter
from fusewb.tracers.live import ERASE_LINE, StatusLine
from fusewb.contract.units import format_size, parse_size

MAX = 1 << 20
ROWS = 2000  # random request rows per flush: a part of about 60 KiB


def _request(rng: np.random.Generator, ts: int) -> dict:
    return {"send_ts_ns": ts, "end_ts_ns": ts + 1000, "duration_ns": 1000, "ongoing": False,
            "connection": 52, "bdi": "0:52", "unique": int(rng.integers(1 << 40)), "opcode": 16,
            "opcode_name": "WRITE", "len": int(rng.integers(1 << 20)), "error": 0, "pid": 7,
            "tgid": 7, "comm": "writer", "end_pid": 8, "end_tgid": 8, "end_comm": "server"}


def _write_bounded(folder: Path, flushes: int) -> tuple[CaptureWriter, list[int]]:
    """A capture of ``flushes`` flushes of ROWS requests each (one stack in the first), bounded
    by MAX; the bytes on disk after each flush."""
    rng = np.random.default_rng(1)
    writer = CaptureWriter(folder, {"start_monotonic_ns": 0}, max_size=MAX)
    sizes = []
    ts = 1_000_000_000
    writer.add("stacks", {"stack_id": 1, "frames": ["folio_wait_writeback", "fuse_fsync"]})
    for _ in range(flushes):
        for _ in range(ROWS):
            ts += 10_000
            writer.add("requests", _request(rng, ts))
        writer.flush()
        sizes.append(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))
    writer.close(end_monotonic_ns=ts + 10_000)
    return writer, sizes


def test_max_size_drops_the_oldest_parts_and_counts_them(tmp_path) -> None:
    capture = tmp_path / "cap"
    writer, sizes = _write_bounded(capture, 40)
    newest = max(p.size for p in writer.on_disk)
    assert max(sizes) <= MAX + newest  # at most one flush over the bound
    assert sum(p.stat().st_size for p in capture.rglob("*") if p.is_file()) \
        == writer.size_on_disk()
    meta = json.loads((capture / "meta.json").read_text())
    dropped = meta["dropped"]
    parts = sorted(p.name for p in (capture / "requests").glob("part-*.parquet"))
    assert dropped["parts"]["requests"] == 40 - len(parts) > 0
    assert parts[-1] == "part-000040.parquet" and parts[0] != "part-000001.parquet"
    assert meta["max_size_bytes"] == MAX and "stacks" not in dropped["parts"]
    assert (capture / "stacks" / "part-000001.parquet").exists()  # stacks are never dropped
    kept = pd.read_parquet(capture / "requests")
    assert len(kept) == meta["tables"]["requests"] == 40 * ROWS - dropped["rows"]["requests"]
    # the last dropped request was sent 10 us before the first kept one and took 1 us
    assert dropped["until_monotonic_ns"] == kept.send_ts_ns.min() - 10_000 + 1000
    assert meta["complete"] is True


def test_analysis_reports_the_dropped_window(tmp_path) -> None:
    capture = tmp_path / "cap"
    _write_bounded(capture, 30)
    meta = json.loads((capture / "meta.json").read_text())
    meta.update(host="bounded", plan="tracepoint", probes=["tracepoint:fuse:fuse_request_send"],
                kernel_release="6.18", mounts=[])
    (capture / "meta.json").write_text(json.dumps(meta))
    found = flags(load_capture(capture))
    row = found[found.flag == "INCOMPLETE_CAPTURE"].iloc[0]
    parts = meta["dropped"]["parts"]["requests"]
    until_s = meta["dropped"]["until_monotonic_ns"] / 1e9
    assert f"--max-size 1.0 MiB dropped the {parts} oldest parts" in row.evidence
    assert f"data before +{until_s:.1f} s is not whole" in row.evidence
    assert "parts missing" not in row.evidence  # meta.json counts the rows kept
    assert row.severity == "medium"


def test_stopped_early_is_reported(tmp_path) -> None:
    capture = write_capture(tmp_path / "cap", make_meta(
        stopped_early="only 200 KiB left on the file system of capture cap (reserve 256.0 KiB)"))
    row = flags(load_capture(capture)).query("flag == 'INCOMPLETE_CAPTURE'").iloc[0]
    assert "the tracer stopped early: only 200 KiB left" in row.evidence


@pytest.mark.parametrize("text, size", [("1048576", 1 << 20), ("500M", 500 << 20),
                                        ("2G", 2 << 30), ("1.5GiB", 3 << 29), ("64k", 64 << 10)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "abc", "-1M", "nan", "inf", "5X"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("value, problem", [("lots", "is not a size"),
                                            ("100K", "below the smallest bound")])
def test_max_size_option_refuses_bad_sizes(value: str, problem: str) -> None:
    done = CliRunner().invoke(cli, ["trace", "--max-size", value, "-o", "/tmp/never"])
    assert done.exit_code == 2 and problem in done.output, done.output
    assert "Traceback" not in done.output


def test_format_size() -> None:
    assert [format_size(n) for n in (10, 2048, 3 << 20, 5 << 30)] == \
        ["10 bytes", "2.0 KiB", "3.0 MiB", "5.0 GiB"]


def test_status_line_on_a_terminal_rewrites_one_line() -> None:
    out: list[str] = []
    status = StatusLine(out.append, tty=True, width=lambda: 20)
    status.show("[1s] events 10, waits 2, lost 0")
    status.show("[2s] events 20, waits 3, lost 0")
    status.print(lambda line: out.append(line + "\n"), "a wait line")
    status.close()
    assert out == ["\r[1s] events 10, wai\x1b[K", "\r[2s] events 20, wai\x1b[K", ERASE_LINE,
                   "a wait line\n", "\r[2s] events 20, wai\x1b[K", ERASE_LINE]
    assert "".join(out).count("\n") == 1  # only the printed line scrolls


def test_status_line_elsewhere_is_a_plain_line_now_and_then() -> None:
    out: list[str] = []
    status = StatusLine(out.append, tty=False, width=lambda: 20, plain_every_s=0.0)
    status.show("first")
    status.print(lambda line: out.append(line + "\n"), "a wait line")
    status.close()
    assert out == ["first\n", "a wait line\n"]
    quiet: list[str] = []
    rare = StatusLine(quiet.append, tty=False, width=lambda: 20, plain_every_s=3600)
    rare.show("not yet")
    rare.close()
    assert quiet == [] and "\r" not in "".join(out)


def test_writer_reserve_follows_the_file_system(tmp_path) -> None:
    writer = CaptureWriter(tmp_path / "cap", {})
    info = os.statvfs(tmp_path)
    share = int(info.f_blocks * info.f_frsize * 0.02)
    assert writer.reserve == min(max(share, 256 << 10), 256 << 20)
    assert 0 < writer.space_left() <= info.f_blocks * info.f_frsize
    assert writer.low_on_space() == (writer.space_left() < writer.reserve)
    writer.close()
