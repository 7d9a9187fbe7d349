"""The verdict of ``fusewb analyze``: sentences from the flags and their evidence, what to do, the
same for every engine, first in text, JSON and HTML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusewb.analysis.capture import load_capture
from fusewb.analysis.cli import analyze
from fusewb.analysis.report import build_report
from fusewb.analysis.scan import scan
from fusewb.analysis.synthetic import write_capture
from fusewb.analysis.verdict import human_ms
from tests.analysis_cases import at, clean_capture, everything_capture, stacks_table, STACK_IDS


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return everything_capture(tmp_path_factory.mktemp("cap") / "everything")


def _verdict(folder: Path, engine: str = "pandas") -> dict:
    cap = load_capture(folder)
    return build_report(cap, 50.0, scan=scan(cap, 50.0, engine))["verdict"]


def test_human_ms() -> None:
    assert [human_ms(v) for v in (4263.2, 120.4, 0.4, 250_000, None)] == \
        ["4.26 s", "120 ms", "0.40 ms", "250 s", "?"]


def test_verdict_names_the_worst_wait_the_server_and_every_flag(everything: Path) -> None:
    said = _verdict(everything)
    first = said["sentences"][0]
    # the longest wait: kcompactd0's migration wait, still going on at the end
    assert first.startswith("kcompactd0[102] was still waiting after 3 s in migration on inode 12"
                            " of /mnt/fusewb (fuse.pyfuse3, bdi 0:52) when tracing stopped")
    # the server by name, and its WRITEs: one of 41 (40 ended, 1 held) never answered
    assert "the server fusewb-server[3000] left 1 of 41 WRITEs unanswered, for up to 9 s" in first
    for flag in ("BLOCKED_WAIT", "STALLED_REQUEST", "SERVER_SELF_WAIT", "MIGRATION_WAIT",
                 "SYNC_WAIT", "RECLAIM_WAIT", "RECLAIM_THROTTLE", "DIRTY_THROTTLE"):
        assert flag in said["text"], flag
    assert said["sentences"][-1] == "The capture is incomplete (lost 3 events (waits 3))."
    assert any("/sys/fs/fuse/connections/52/abort" in a for a in said["actions"])
    assert any("/sys/class/bdi/0:52/max_ratio" in a for a in said["actions"])
    assert said["text"] == " ".join(said["sentences"])


@pytest.mark.parametrize("engine", ["streaming", "dask"])
def test_every_engine_gives_the_same_verdict(everything: Path, engine: str) -> None:
    assert _verdict(everything, engine) == _verdict(everything)


def test_a_quiet_capture_says_so(tmp_path: Path) -> None:
    said = _verdict(clean_capture(tmp_path / "clean"))
    assert said["sentences"] == ["No task waited on FUSE writeback for 50 ms or more: 5 waits in "
                                 "all, the longest 2.00 ms in write."]
    assert said["actions"] == []


def test_a_fsync_behind_a_server_that_answers_nothing(tmp_path: Path) -> None:
    """The issue's example: one fsync, twelve WRITEs none of which the server answered; its
    inode over 2**63, stored as a negative int64, is named as the kernel prints it."""
    waits = [{"ts_ns": at(10), "duration_ns": 4_260_000_000, "pid": 8606, "tgid": 8606,
              "comm": "python3", "ino": 2**63 + 5 - 2**64, "stack_id": STACK_IDS["fsync"]}]
    requests = [{"send_ts_ns": at(5 + i), "duration_ns": 4_270_000_000, "ongoing": True,
                 "unique": 2 * i + 2, "error": None} for i in range(12)]
    folder = write_capture(tmp_path / "c", None, waits=waits, requests=requests,
                           stacks=stacks_table())
    first = _verdict(folder)["sentences"][0]
    assert first == ("python3[8606] waited 4.26 s in fsync on inode 9223372036854775813 of "
                     "/mnt/fusewb (fuse.pyfuse3, bdi 0:52): the server answered none of 12 "
                     "WRITEs for 4.27 s (BLOCKED_WAIT, STALLED_REQUEST).")


def test_the_verdict_comes_first_in_text_json_and_html(everything: Path, tmp_path: Path) -> None:
    text = CliRunner().invoke(analyze, [str(everything)]).output
    lines = text.splitlines()
    assert lines[2] == "Verdict" and lines[3].startswith("  kcompactd0[102] was still waiting")
    assert text.index("What to do") < text.index("Waits on FUSE writeback, per path")
    report = json.loads(CliRunner().invoke(analyze, [str(everything), "--format", "json"]).output)
    assert list(report)[0] == "verdict"
    out = tmp_path / "r.html"
    CliRunner().invoke(analyze, [str(everything), "--format", "html", "-o", str(out)])
    page = out.read_text()
    assert page.index("Verdict") < page.index("<h2>Capture</h2>")
    assert "kcompactd0[102] was still waiting after 3 s" in page


def test_many_hosts_get_a_short_verdict(tmp_path: Path) -> None:
    """Four hosts: the three worst mounts told, then the flags per host; each action once,
    naming its hosts."""
    for host in ("web1", "web2", "db1", "batch1"):
        everything_capture(tmp_path / "fleet" / host, host=host)
    said = _verdict(tmp_path / "fleet")
    assert len(said["sentences"]) == 5, said["sentences"]
    assert [s.split(":")[0] for s in said["sentences"][:3]] == ["batch1", "db1", "web1"]
    assert said["sentences"][3].startswith("4 of 4 hosts raised flags: ")
    assert "SYNC_WAIT on 4 hosts" in said["sentences"][3]
    assert said["sentences"][4] == ("The captures of batch1, db1, web1, web2 are incomplete "
                                    "(batch1: lost 3 events (waits 3)).")
    assert len(said["actions"]) == 8
    assert all(a.startswith("batch1, db1, web1, web2: ") for a in said["actions"])
