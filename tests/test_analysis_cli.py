"""``fusewb analyze``: text, JSON and HTML reports, --fail-on, and every kind of bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fusewb.analysis.cli import analyze
from fusewb.analysis.report import render_report
from fusewb.analysis.synthetic import write_capture
from fusewb.contract.schema import SCHEMA_VERSION
from tests.analysis_cases import clean_capture, everything_capture

FLAG_KEYS = {"flag", "path", "bdi", "mount", "pid", "comm", "duration_ms", "ongoing"}


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return everything_capture(tmp_path_factory.mktemp("cap") / "everything")


def _run(*args: str | Path):
    return CliRunner().invoke(analyze, [str(a) for a in args])


def test_text_report(everything: Path) -> None:
    result = _run(everything)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "kernel 6.18.0-synthetic" in out and "lost events 3" in out
    assert "migration" in out and "MIGRATION_WAIT (1)" in out and "why: migration" in out
    assert "fuse_fsync" in out
    assert "completed requests without a row, counted in the kernel: WRITE 38 of 40" in out
    assert "rows (flags, single waits and requests, timelines) exist for every wait, requests " \
        "of 1 ms or more" in out
    assert out.count("percentiles from in-kernel histograms, within ±6.25% (max exact)") == 2
    assert "Asleep in writeback since before tracing" in out and "jbd2/vda1-8[77]" in out
    assert "What this kernel did" in out
    assert "reclaim waited on FUSE writeback although 6.16+" in out
    assert "skips folios of FUSE mappings" not in out


def test_kernel_note_on_reclaim_skipping_fuse_folios(tmp_path: Path) -> None:
    vm = [{"ts_ns": 10**12, "kind": "shrink_inactive", "nr_scanned": 64, "nr_writeback": 9}]
    folder = clean_capture(tmp_path / "c")
    write_capture(tmp_path / "c", json.loads((folder / "meta.json").read_text()), vm=vm)
    result = _run(folder)
    assert "reclaim met 9 folios under writeback" in result.output
    assert "skips folios of FUSE mappings" in result.output


def test_text_report_caps_long_flag_lists(tmp_path: Path) -> None:
    waits = {"ts_ns": [10**12 + i * 10**6 for i in range(12)], "duration_ns": [10**8] * 12,
             "pid": list(range(200, 212)), "stack_id": [1] * 12}
    folder = write_capture(tmp_path / "c", waits=waits,
                           stacks={"stack_id": [1], "frames": [["folio_wait_writeback",
                                                                "fuse_fsync"]]})
    result = _run(folder)
    assert result.exit_code == 0 and "... 4 more" in result.output


def test_json_report_schema(everything: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = _run(everything, "--format", "json", "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["report_version"] == 2 and report["threshold_ms"] == 50
    assert report["histograms"]["hosts"] == ["synthetic"]
    assert report["histograms"]["percentile_error_pct"] == 6.25
    assert report["capture"]["sources"][0]["row_threshold_ms"] == {"requests": 1.0, "waits": 0.0}
    assert report["capture"]["lost_events"] == 3 and report["capture"]["hosts"] == ["synthetic"]
    assert len(report["flags"]) == sum(report["flag_counts"].values()) == 11
    for item in report["flags"]:
        assert FLAG_KEYS <= set(item)
    stalled = next(f for f in report["flags"] if f["flag"] == "STALLED_REQUEST")
    assert stalled["ongoing"] is True and stalled["pid"] == 40 and stalled["path"] is None
    assert {r["path"] for r in report["waits_by_path"]} == {"fsync", "reclaim", "migration",
                                                            "sync", "close"}
    totals = {r["opcode_name"]: r["count"] for r in report["request_totals"]}
    assert totals == {"WRITE": 40, "GETATTR": 1}
    assert report["unseen_waiters"][0]["pid"] == 77 and report["unseen_waiters"][0]["fuse"] is False
    stdout = _run(everything, "--format", "json")
    assert json.loads(stdout.output) == report


def test_html_report_has_plots(everything: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = _run(everything, "--format", "html", "-o", out)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    # Bokeh inline: the timeline and the flame graph, no script from the network
    assert page.count('<div id="') >= 2 and "Bokeh" in page and "<h2>Timeline</h2>" in page
    assert "<h2>Where tasks waited</h2>" in page
    assert not re.search(r"<script[^>]+src=", page) and "cdn.bokeh.org" not in page
    assert "MIGRATION_WAIT" in page
    missing_output = _run(everything, "--format", "html")
    assert missing_output.exit_code == 2 and "-o" in missing_output.output


def test_fail_on(everything: Path, tmp_path: Path) -> None:
    assert _run(everything, "--fail-on", "SYNC_WAIT").exit_code == 1
    assert _run(everything, "--fail-on", "stalled_request,SYNC_WAIT").exit_code == 1
    healthy = clean_capture(tmp_path / "ok")
    assert _run(healthy, "--fail-on", "SYNC_WAIT,BLOCKED_WAIT").exit_code == 0
    unknown = _run(everything, "--fail-on", "SYNC_WAIT,NO_SUCH_FLAG")
    assert unknown.exit_code == 2
    assert "NO_SUCH_FLAG" in unknown.output and len(unknown.output.strip().splitlines()) == 1


def test_render_report_api(everything: Path, tmp_path: Path) -> None:
    rendered = render_report(everything, "html", 50, tmp_path / "r.html")
    assert rendered.output == tmp_path / "r.html" and rendered.output.stat().st_size > 10_000
    assert "SERVER_SELF_WAIT" in rendered.raised


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    cases: dict[str, Path] = {"missing": tmp_path / "nope"}
    cases["empty"] = tmp_path / "empty"
    cases["empty"].mkdir()
    cases["file"] = tmp_path / "file"
    cases["file"].write_text("x")
    cases["empty meta"] = clean_capture(tmp_path / "emptymeta")
    (cases["empty meta"] / "meta.json").write_text("")
    cases["corrupt meta"] = clean_capture(tmp_path / "badmeta")
    (cases["corrupt meta"] / "meta.json").write_text('{"schema_version": 1, "host": ')
    cases["newer"] = clean_capture(tmp_path / "newer", schema_version=SCHEMA_VERSION + 1)
    cases["truncated part"] = clean_capture(tmp_path / "trunc")
    part = cases["truncated part"] / "waits" / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    cases["corrupt part"] = clean_capture(tmp_path / "corrupt")
    (cases["corrupt part"] / "requests" / "part-000001.parquet").write_bytes(os.urandom(600))
    cases["empty part"] = clean_capture(tmp_path / "emptypart")
    (cases["empty part"] / "waits" / "part-000001.parquet").write_bytes(b"")
    cases["meta wrong type"] = clean_capture(tmp_path / "metatype", start_monotonic_ns="soon")
    cases["part lacks column"] = clean_capture(tmp_path / "nocolumn")
    part = cases["part lacks column"] / "waits" / "part-000001.parquet"
    pq.write_table(pq.read_table(part).drop_columns(["stack_id"]), part)
    return cases


def _contents(target: Path) -> dict[Path, bytes]:
    if not target.is_dir():
        return {}
    return {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", ["missing", "empty", "file", "empty meta", "corrupt meta",
                                  "newer", "truncated part", "corrupt part", "empty part",
                                  "meta wrong type", "part lacks column"])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    target = _bad_inputs(tmp_path)[case]
    before = _contents(target)
    result = _run(target)
    assert result.exit_code == 2, (case, result.output, result.exception)
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output and result.output.startswith("Error: ")
    assert str(target.name) in result.output
    assert _contents(target) == before  # never modified


def test_subprocess_runs_without_warnings(everything: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONWARNINGS="error")
    command = [sys.executable, "-W", "error", "-m", "fusewb.cli", "analyze"]
    good = subprocess.run([*command, str(everything), "--format", "json"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["flag_counts"]["BLOCKED_WAIT"] == 3
    assert good.stderr == ""
    newer = clean_capture(tmp_path / "newer", schema_version=SCHEMA_VERSION + 1)
    bad = subprocess.run([*command, str(newer)], capture_output=True, text=True, timeout=120,
                         env=env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "newer fusewb" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_module_imports_only_click() -> None:
    code = ("import sys, fusewb.cli; "
            "bad = [m for m in ('pandas', 'pyarrow', 'matplotlib', 'bcc') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_killed_tracer_capture_with_only_meta(tmp_path: Path) -> None:
    folder = write_capture(tmp_path / "c", {"complete": False, "end_monotonic_ns": None})
    for table in ("waits", "requests", "throttle", "vm", "stacks"):
        (folder / table).mkdir()  # the tracer creates every table folder up front
    text = _run(folder)
    assert text.exit_code == 0 and "INCOMPLETE" in text.output and "duration unknown" in text.output
    report = json.loads(_run(folder, "--format", "json").output)
    assert [f["flag"] for f in report["flags"]] == ["INCOMPLETE_CAPTURE"]
    assert report["capture"]["complete"] is False and report["waits_by_path"] == []
    assert _run(folder, "--format", "html", "-o", tmp_path / "r.html").exit_code == 0
    assert _run(folder, "--fail-on", "INCOMPLETE_CAPTURE").exit_code == 1
