"""`make soak`'s report: per-test pass counts over runs, guest kernels' tests under their release,
make test's and make demo's exits (scripts/soak_report.py on a made-up soak folder)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPORT = Path(__file__).resolve().parent.parent / "scripts" / "soak_report.py"


def _junit(path: Path, cases: dict[str, bool]) -> None:
    failure = '<failure message="x"/>'
    body = "".join(f'<testcase classname="tests.t" name="{name}">{"" if ok else failure}</testcase>'
                   for name, ok in cases.items())
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite>{body}</testsuite></testsuites>')


def _report(folder: Path, runs: int) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, str(REPORT), str(folder), str(runs)],
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout.splitlines()


def test_a_guest_failure_counts_like_a_host_one(tmp_path: Path) -> None:
    for i in (1, 2):
        _junit(tmp_path / f"test-{i}.xml", {"a": True, "b": True})
        _junit(tmp_path / f"test-{i}-6.1.0-56-amd64.xml", {"a": True, "g": i == 1})
        (tmp_path / f"test-{i}.rc").write_text("0\n" if i == 1 else "2\n")
        (tmp_path / f"demo-{i}.log").write_text("HTML report: x\n")
    code, lines = _report(tmp_path, 2)
    assert code == 1
    assert lines[0].split() == ["1/2", "[6.1.0-56-amd64]", "tests.t::g"]
    assert lines[-1] == "soak: 3 of 4 tests passed 2/2; make test passed 1/2; make demo passed 2/2"


def test_all_passed(tmp_path: Path) -> None:
    _junit(tmp_path / "test-1.xml", {"a": True})
    (tmp_path / "test-1.rc").write_text("0\n")
    (tmp_path / "demo-1.log").write_text("HTML report: x\n")
    assert _report(tmp_path, 1) == (0, ["soak: 1 of 1 tests passed 1/1; make test passed 1/1; "
                                        "make demo passed 1/1"])
