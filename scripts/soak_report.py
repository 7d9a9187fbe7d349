"""Per-test pass counts of a `make soak` folder: ``soak_report.py DIR N``.

Reads ``DIR/test-I.xml`` (pytest's JUnit XML of run I on this kernel), ``DIR/test-I-RELEASE.xml``
(the guest stage's, one per guest kernel: its tests are named ``[RELEASE] ...``), ``DIR/test-I.rc``
(make test's exit status) and ``DIR/demo-I.log``; prints each test that did not pass in every run
first, then a summary line. Exit 1 when any did not, or make test or make demo failed once.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

__all__ = ["main"]


def _outcomes(xml: Path) -> dict[str, str]:
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError):
        return {}
    outcomes = {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        bad = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[name] = bad[0] if bad else "passed"
    return outcomes


def main(argv: list[str]) -> int:
    folder, runs = Path(argv[0]), int(argv[1])
    passed: Counter[str] = Counter()
    seen: set[str] = set()
    for i in range(1, runs + 1):
        results = {folder / f"test-{i}.xml": ""}
        results.update({xml: f"[{xml.stem.split('-', 2)[2]}] "
                        for xml in sorted(folder.glob(f"test-{i}-*.xml"))})
        for xml, prefix in results.items():
            for name, outcome in _outcomes(xml).items():
                seen.add(prefix + name)
                passed[prefix + name] += outcome == "passed"
    test_passed = sum(1 for i in range(1, runs + 1) if _text(folder / f"test-{i}.rc").strip() == "0")
    demo_passed = sum(1 for i in range(1, runs + 1)
                      if "NOT as expected" not in _text(folder / f"demo-{i}.log")
                      and "HTML report:" in _text(folder / f"demo-{i}.log"))
    flaky = sorted(name for name in seen if passed[name] < runs)
    for name in flaky:
        print(f"  {passed[name]}/{runs}  {name}")
    print(f"soak: {len(seen) - len(flaky)} of {len(seen)} tests passed {runs}/{runs}; "
          f"make test passed {test_passed}/{runs}; make demo passed {demo_passed}/{runs}")
    return 1 if flaky or test_passed < runs or demo_passed < runs or not seen else 0


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
