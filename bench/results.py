"""``bench/RESULTS.md``: date, machine, command, the table of every ratio, the target check, and
each part's notes (method, profile evidence, what bounds a missed target).

A part run on its own (``python -m bench soak --results run.md``) goes into the record with
``python -m bench.results run.md`` (:func:`merge_run`; the record defaults to bench/RESULTS.md).
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.stats import PartResult, fmt_number, render_markdown

__all__ = ["RESULTS_FILE", "DESIGN_CHANGES", "merge_run", "results_markdown", "write_results"]

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
    "Tracer memory: the soak's RSS went from 207-216 MiB to about 135 MiB. The capture writer "
    "builds each Parquet part from Arrow buffers (`tracers/arrow_rows.py`): pyarrow's own "
    "conversions (`Table.from_pylist`, `pa.array`) import pandas the first time, about 40 MiB "
    "for the whole session. Once the program is loaded, the pages of LLVM's and clang's "
    "libraries the compile touched (about 80 MiB) leave the process (`release_compile_memory` "
    "in `tracers/program.py`: MADV_DONTNEED for their code, MADV_PAGEOUT for the rest).",
    "Observed while building the event load (fixed in the tracer by its owner, commit "
    "241359f): resolving `--mount` with `realpath()` on every poll made the tracer send "
    "itself a GETATTR per poll; on a mount with `attr_timeout=0` each such request's event "
    "woke the next poll, a loop of ~9,000 requests/s. The mountpoint is no longer stat'ed.",
]


DESIGN_HEADING = "## Tracer design changes driven by this bench"


def _design_lines() -> list[str]:
    return [f"- {change}" for change in DESIGN_CHANGES]


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
    out += ["", DESIGN_HEADING, "", *_design_lines()]
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


_TABLE_ROW = re.compile(r"^\| [a-z]")
_TARGET_LINE = re.compile(r"^- [a-z]+ / ")


def _header_value(text: str, key: str) -> str:
    prefix = f"- {key}: "
    return next((line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)), "?")


def _sections(text: str) -> dict[str, str]:
    """``## name (...)`` section of each part -> its whole text (header line included)."""
    sections = {}
    for chunk in text.split("\n## ")[1:]:
        name = chunk.split(" ", 1)[0]
        if chunk.startswith(f"{name} ("):
            sections[name] = "## " + chunk.rstrip("\n")
    return sections


def merge_run(record: str, run: str) -> str:
    """``record`` (a whole RESULTS.md) with the parts of ``run`` (the RESULTS.md text of a run
    of some parts, ``--results``) put in: each part's table rows where its old rows were, its
    target-check lines likewise, and its notes section, headed with the run's date and command;
    every other part stays as recorded. The design changes are rewritten from
    :data:`DESIGN_CHANGES`. A part the record lacks goes after the others."""
    date, command = _header_value(run, "date"), _header_value(run, "command")
    run_lines = run.splitlines()
    out = record.rstrip("\n").splitlines()
    for part, section in _sections(run).items():
        for prefix, kind in ((f"| {part} |", _TABLE_ROW), (f"- {part} / ", _TARGET_LINE)):
            new = [line for line in run_lines if line.startswith(prefix)]
            at = next((i for i, line in enumerate(out) if line.startswith(prefix)), None)
            out = [line for line in out if not line.startswith(prefix)]
            if at is None:  # a part the record lacks: after the last line of the kind
                at = 1 + max((i for i, line in enumerate(out) if kind.match(line)), default=len(out) - 1)
            out[at:at] = new
        text = "\n".join(out)
        head, body = section.split("\n", 1)
        if ", run on its own: " not in head:
            head = f"{head.rsplit(')', 1)[0]}, run on its own: {command}, {date})"
        replaced = f"{head}\n{body}"
        old = _sections(text).get(part)
        text = text.replace(old, replaced) if old else f"{text}\n\n{replaced}"
        out = text.splitlines()
    if DESIGN_HEADING in out:  # the list lives in this module: the record gets the current one
        start = out.index(DESIGN_HEADING) + 2
        end = next((i for i in range(start, len(out)) if not out[i].startswith("- ")), len(out))
        out[start:end] = _design_lines()
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    """``python -m bench.results RUN.md [RECORD.md]``: merge a run's parts into the record."""
    if len(argv) not in (2, 3):
        print("usage: python -m bench.results RUN.md [RECORD.md (default bench/RESULTS.md)]",
              file=sys.stderr)
        return 2
    record = Path(argv[2]) if len(argv) == 3 else RESULTS_FILE
    merged = merge_run(record.read_text(), Path(argv[1]).read_text())
    print(f"merged {', '.join(_sections(Path(argv[1]).read_text()))} into {write_results(merged, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
