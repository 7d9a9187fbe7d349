"""``bench/RESULTS.md``: date, machine, command, the table of every ratio, the target check, and
each part's notes (method, profile evidence, what bounds a missed target)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from bench.stats import PartResult, fmt_number, render_markdown

__all__ = ["RESULTS_FILE", "DESIGN_CHANGES", "results_markdown", "write_results"]

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"


# Changes to fusewb made on this bench's evidence (history; the figures above are the latest run).
DESIGN_CHANGES: list[str] = [
    "`fusewb trace` ring buffer default raised from 256 pages (1 MiB) to 4096 pages (16 MiB), "
    "`contract/defaults.py` RING_PAGES. The tracer drains the ring every 100 ms and "
    "stops draining while it writes each second's Parquet parts; with 1 MiB it lost events "
    "from about 50,000 request events/s, with 16 MiB it records over 100,000 events/s without "
    "loss (the events part measures both rings in every run).",
    "The tracer re-reads the mount table only when it changed (`MountTableWatch` in "
    "`tracers/mounts.py`: poll(2) on /proc/self/mountinfo reports mounts and unmounts) "
    "instead of parsing it on every 100 ms poll: the overhead part's profile showed that "
    "parsing as half of the tracer process's idle CPU; with the tracer attached to an idle "
    "fixture mount its process went from 1.3% to 0.3% of a CPU.",
    "Observed while building the event load (fixed in the tracer by its owner, commit "
    "241359f): resolving `--mount` with `realpath()` on every poll made the tracer send "
    "itself a GETATTR per poll; on a mount with `attr_timeout=0` each such request's event "
    "woke the next poll, a loop of ~9,000 requests/s. The mountpoint is no longer stat'ed.",
]


def _targets(parts: Sequence[PartResult]) -> list[str]:
    lines = []
    for part in parts:
        for row in part.rows:
            if row.met is None:
                continue
            verdict = "met" if row.met else "MISSED"
            lines.append(f"- {row.part} / {row.case} / {row.variant}: target {row.target}: "
                         f"**{verdict}** (median {fmt_number(row.value.median)} {row.unit}"
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
    out += ["", "## Tracer design changes driven by this bench", ""]
    out += [f"- {change}" for change in DESIGN_CHANGES]
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
