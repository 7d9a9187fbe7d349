"""``bench/RESULTS.md``: date, machine, command, the table of every ratio, the target check, and
each part's notes (method, profile evidence, what bounds a missed target)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from bench.stats import PartResult, render_markdown

__all__ = ["RESULTS_FILE", "results_markdown", "write_results"]

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"


def _targets(parts: Sequence[PartResult]) -> list[str]:
    lines = []
    for part in parts:
        for row in part.rows:
            if row.met is None:
                continue
            verdict = "met" if row.met else "MISSED"
            lines.append(f"- {row.part} / {row.case} / {row.variant}: target {row.target}: "
                         f"**{verdict}** (median {row.value.median:,.4g} {row.unit}"
                         + (f", ratio {row.ratio.median:.3f}" if row.ratio else "") + ")")
    return lines or ["- no target was checked in this run"]


def results_markdown(parts: Sequence[PartResult], machine: dict[str, str], command: str,
                     started: datetime.datetime, seconds: float) -> str:
    """The whole RESULTS.md text."""
    out = [
        "# fusewb benchmarks",
        "",
        "Produced by `make bench` (`python -m bench`); rerun it to refresh this file. Targets "
        "come from issue 7; where one is missed, the part's notes say by how much and what bounds "
        "it.",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command}` ({seconds / 60:.1f} min)",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
        "Values are medians over interleaved repetitions; *spread* is min-max; *ratio* is the "
        "median of per-repetition ratios to *ratio to* (a baseline measured in the same "
        "repetition, or the target value).",
        "",
        "## Results",
        "",
        render_markdown([row for part in parts for row in part.rows]),
        "",
        "## Target check",
        "",
        *_targets(parts),
    ]
    for part in parts:
        out += ["", f"## {part.name} ({part.seconds:.0f} s)", ""]
        out += [f"- {note}" for note in part.notes] or ["- no notes"]
    return "\n".join(out) + "\n"


def write_results(text: str, path: Path = RESULTS_FILE) -> Path:
    """Write RESULTS.md (temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
