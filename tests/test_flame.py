"""Where tasks waited: time-weighted kernel stacks of the waits, as collapsed stacks
(``fusewb export --folded``) and as the flame graph's rectangles."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fusewb.analysis.capture import load_capture
from fusewb.analysis.flame import flame_rects, folded_lines, stack_weights
from fusewb.analysis.synthetic import EXAMPLE_STACKS
from fusewb.analysis.waiting import wait_paths
from tests.analysis_cases import everything_capture

FUSEWB = [sys.executable, "-m", "fusewb.cli"]
FOLDED = re.compile(r"^[^ ;]+(;[^ ;]+)* [1-9][0-9]*$")


@pytest.mark.parametrize("version", [1, 2])
def test_every_wait_is_weighted_once(tmp_path: Path, version: int) -> None:
    """Histograms (every ended wait) plus the ongoing rows, or every row before histograms:
    the same counts and times per path as wait_paths."""
    cap = load_capture(everything_capture(tmp_path / "c", version=version))
    weights = stack_weights(cap)
    paths = wait_paths(cap)
    by_path = weights.groupby("path")[["count", "total_ns"]].sum()
    expected = paths.groupby(paths["path"].astype(object))[["count", "total_ms"]].sum()
    assert by_path["count"].to_dict() == expected["count"].to_dict()
    assert (by_path["total_ns"] / 1e6).round(3).to_dict() == \
        expected["total_ms"].round(3).to_dict()
    # the migration wait (3 s, still going on) leads, its frames outermost first
    first = weights.iloc[0]
    assert first["path"] == "migration" and first["total_ns"] == 3_000_000_000
    assert first["frames"][0] == "entry_SYSCALL_64_after_hwframe"
    assert first["frames"][-1] == "folio_wait_writeback"


def test_folded_lines_read_as_flamegraph_input(tmp_path: Path) -> None:
    cap = load_capture(everything_capture(tmp_path / "c"))
    lines = folded_lines(stack_weights(cap))
    assert lines and all(FOLDED.match(line) for line in lines), lines
    migration = ";".join(reversed(EXAMPLE_STACKS["migration"]))
    assert f"{migration} 3000000" in lines  # 3 s in microseconds


def test_export_folded_cli(tmp_path: Path) -> None:
    capture = everything_capture(tmp_path / "c")
    out = tmp_path / "w.folded"
    done = subprocess.run([*FUSEWB, "export", str(capture), "--folded", "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "weight = microseconds waited" in done.stderr
    printed = subprocess.run([*FUSEWB, "export", str(capture), "--folded"],
                             capture_output=True, text=True, timeout=60)
    assert printed.stdout == out.read_text() and printed.stdout.count("\n") == 5
    both = subprocess.run([*FUSEWB, "export", str(capture), "--folded", "--perfetto"],
                          capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "give one of them" in both.stderr


def test_flame_rects_merge_common_callers() -> None:
    rects = flame_rects([(["main", "a", "x"], 30, 1), (["main", "a", "y"], 10, 2),
                         (["main", "b"], 60, 1)])
    by_stack = {r.stack: r for r in rects}
    assert by_stack["main"].x0 == 0 and by_stack["main"].x1 == 100 and by_stack["main"].count == 4
    assert (by_stack["main > a"].x0, by_stack["main > a"].x1) == (0, 40)
    assert (by_stack["main > b"].x0, by_stack["main > b"].x1) == (40, 100)
    assert by_stack["main > a > y"].depth == 2 and by_stack["main > a > y"].x0 == 30
