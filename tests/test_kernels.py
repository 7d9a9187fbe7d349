"""The kernel matrix (fusewb/kernels.py) on its own: the newest release of each series picked
from an archive index, releases sorted by number, and README's table built from guest results."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from fusewb import kernels
from fusewb.kernels import MATRIX, kernel_table, release_key, series_of


def test_releases_sort_by_their_numbers() -> None:
    ordered = ["5.10.0-9-amd64", "5.10.0-46-amd64", "6.12.9+deb13-amd64", "6.12.117+deb13-amd64",
               "7.2.13+deb14-amd64", "7.3.4+deb13-amd64", "7.10.1+deb13-amd64"]
    assert sorted(reversed(ordered), key=release_key) == ordered


def test_newest_of_each_series_from_the_index() -> None:
    index = {name: {"Package": name} for name in [
        "linux-image-5.10.0-45-amd64", "linux-image-5.10.0-46-amd64", "linux-image-5.10.0-46-amd64-dbg",
        "linux-image-6.12.107+deb13-amd64", "linux-image-6.12.117+deb13-amd64",
        "linux-image-6.12.117+deb13-cloud-amd64", "linux-image-6.17.13+deb13-amd64",
        "linux-image-7.2.13+deb14-amd64", "linux-image-7.3.4+deb13-amd64", "linux-image-7.3.4+deb13-rt-amd64",
    ]}
    newest = {s.name: kernels._newest(s, index) for s in MATRIX if s.suites}
    assert newest == {"5.10": ("linux-image-5.10.0-46-amd64", "5.10.0-46-amd64"),
                      "6.12": ("linux-image-6.12.117+deb13-amd64", "6.12.117+deb13-amd64"),
                      "6.17": ("linux-image-6.17.13+deb13-amd64", "6.17.13+deb13-amd64"),
                      "7.x": ("linux-image-7.3.4+deb13-amd64", "7.3.4+deb13-amd64")}
    assert kernels._newest(MATRIX[0], {}) is None


def test_every_release_finds_its_series() -> None:
    assert [series_of(r).name for r in ("5.10.0-46-amd64", "6.1.0-57-amd64", "6.12.117+deb13-amd64",
                                         "6.17.13+deb13-amd64", "7.3.4+deb13-amd64")] == [s.name for s in MATRIX]
    assert series_of("6.18.44-fc-v1147") is None
    assert {s.role for s in MATRIX} == {"full", "conformance"}


def _results(folder: Path, release: str, temp: bool, **outcomes: dict) -> None:
    folder.mkdir(exist_ok=True)
    doc = {"kernel_release": release, "temp_pages": temp,
           "scenarios": [{"scenario": name, **o} for name, o in outcomes.items()]}
    (folder / f"results-{release}.json").write_text(json.dumps(doc))


def test_table_has_a_column_per_kernel_and_a_row_per_scenario(tmp_path: Path) -> None:
    ok = {"ok": True, "flags": ["BLOCKED_WAIT"], "missing": [],
          "waits": [{"path": "fsync", "count": 12, "max_ms": 251.4}, {"path": "close", "count": 1, "max_ms": 60.0}]}
    bad = {"ok": False, "flags": [], "missing": ["MIGRATION_WAIT"], "waits": []}
    _results(tmp_path, "6.1.0-57-amd64", True, **{"msync-slow": ok, "self-wait": bad})
    _results(tmp_path, "7.3.4+deb13-amd64", False, **{"msync-slow": ok})
    lines = kernel_table(tmp_path).splitlines()
    assert lines[0] == ("| scenario | 5.10: not run | 6.1: 6.1.0-57-amd64 | 6.12: not run | 6.17: not run "
                        "| 7.x: 7.3.4+deb13-amd64 |")
    assert lines[2] == ("| `msync-slow` | not run | fsync x12, max 251 ms; close x1, max 60 ms; BLOCKED_WAIT "
                        "| not run | not run | fsync x12, max 251 ms; close x1, max 60 ms; BLOCKED_WAIT |")
    assert lines[3].startswith("| `self-wait` | not run | **NOT as expected** (missing MIGRATION_WAIT): no wait; no flag |")
    # 6.17 and 7.x hold self-wait back in their guests (no v1 memory controller), with the reason below
    assert lines[3].endswith("| held back in this guest (below) | held back in this guest (below) |")
    assert any(line.startswith("7.x: self-wait not run in its guest: Debian builds this kernel without the v1 memory")
               for line in lines)
    assert "6.1: temp pages; 7.x: no temp pages." in lines[-1]


def test_table_replaces_only_what_is_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{kernels.TABLE_BEGIN}\nold table\n{kernels.TABLE_END}\nafter\n")
    kernels._replace_table(readme, "| new |")
    assert readme.read_text() == f"# x\nbefore\n{kernels.TABLE_BEGIN}\n| new |\n{kernels.TABLE_END}\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(click.ClickException, match="no kernel table markers"):
        kernels._replace_table(readme, "| new |")
