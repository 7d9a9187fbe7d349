"""Tables for people: the report's rows as a person reads them, one table per question.

Each :class:`Question` names what one table answers (a sentence shown above it), the report key
whose rows it shows and its columns with their unit. :func:`people_rows` formats the rows:
durations in ms or s (:func:`~fusewb.analysis.verdict.human_ms`), bytes in KiB/MiB, inode
numbers as the kernel prints them (:func:`kernel_ino`), and leaves out the context columns
(host, mount, bdi, connection) that carry one value in every row, naming that value once
instead (``host vm``). The JSON report keeps every column as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fusewb.analysis.verdict import human_ms
from fusewb.contract.units import format_size

__all__ = ["kernel_ino", "Column", "Question", "QUESTIONS", "people_rows", "PeopleTable"]

_U64 = 1 << 64
# Columns that place a row (and so may be the same in every row): left out when they are.
CONTEXT = ("host", "mount", "bdi", "connection")


def kernel_ino(value: Any) -> int | None:
    """An inode number as the kernel prints it (``%lu``): the capture stores the kernel's
    unsigned 64-bit number in an int64 column, so numbers over 2**63 read back negative."""
    if value is None:
        return None
    number = int(value)
    return number + _U64 if number < 0 else number


@dataclass(frozen=True)
class Column:
    """One column: its key in the report rows, its heading and its unit (``ms``, ``bytes``,
    ``ino``, ``bool``, or ``""`` as it is)."""

    key: str
    head: str
    unit: str = ""


@dataclass(frozen=True)
class Question:
    """One table of the report: the report key of its rows, the sentence saying what it
    answers, its columns."""

    key: str
    title: str
    answers: str
    columns: tuple[Column, ...]


def _c(spec: str) -> Column:
    """``"key:head:unit"`` -> Column (head defaults to the key with spaces, unit to none)."""
    key, head, unit = (spec.split(":") + ["", ""])[:3]
    return Column(key, head or key.replace("_", " "), unit)


def _cols(*specs: str) -> tuple[Column, ...]:
    return tuple(_c(s) for s in specs)


_LATENCY = ("mean_ms:mean:ms", "p50_ms:p50:ms", "p90_ms:p90:ms", "p99_ms:p99:ms", "max_ms:max:ms")

QUESTIONS: tuple[Question, ...] = (
    Question("host_totals", "Hosts", "Which hosts waited on FUSE writeback, and how badly?",
             _cols("host", "waits", "ongoing_waits:still waiting", "requests", "flags",
                   "worst_severity:worst", "lost_events:lost events")),
    Question("flags", "Flags", "What went wrong, worst first: each flag with its task, file and "
             "evidence.",
             _cols("severity", "flag", "host", "comm:task", "pid", "path", "mount", "bdi",
                   "ino:inode:ino", "duration_ms:worst:ms", "ongoing:still going:bool",
                   "count", "total_ms:total:ms", "evidence")),
    Question("waits_by_path", "Waits per kernel path", "In which kernel path did tasks wait on "
             "FUSE writeback, how often and how long (every wait counted)?",
             _cols("host", "mount", "bdi", "path", "count", "ongoing:still waiting",
                   *_LATENCY, "total_ms:total:ms", "tasks", "inodes")),
    Question("requests_by_opcode", "FUSE requests", "How long did the FUSE server take to answer "
             "each kind of request (every request counted)?",
             _cols("host", "mount", "connection", "opcode_name:opcode", "count",
                   "ongoing:unanswered", "errors", "bytes::bytes", *_LATENCY)),
    Question("dirty_throttling", "Dirty throttling", "Which writers did balance_dirty_pages pause "
             "to keep the FUSE bdi within its share of the dirty limit?",
             _cols("host", "mount", "comm:task", "pid", "pauses", "pause_ms_total:paused:ms",
                   "pause_ms_max:longest pause:ms", "max_ratio:max_ratio %")),
    Question("reclaim", "Reclaim", "How much did memory reclaim run, and did it meet writeback?",
             _cols("host", "kind", "events", "total_ms:total:ms", "max_ms:longest:ms",
                   "nr_scanned:scanned", "nr_reclaimed:reclaimed",
                   "nr_writeback:under writeback", "throttled_writeback:throttled on writeback")),
    Question("migration", "Migration and compaction", "How much did migration and compaction "
             "run, and how many pages failed to move?",
             _cols("host", "kind", "events", "total_ms:total:ms", "max_ms:longest:ms",
                   "succeeded", "failed")),
    Question("unseen_waiters", "Asleep before tracing", "Which tasks were already asleep in "
             "writeback when tracing began (from /proc; bdi unknown)?",
             _cols("host", "comm:task", "pid", "path", "fuse:FUSE frame:bool",
                   "duration_ms:asleep at least:ms", "stack")),
)


@dataclass(frozen=True)
class PeopleTable:
    """Formatted rows of one question: the headings shown, the rows (strings), and the context
    columns left out because every row that has one has the same value (``"host vm"``)."""

    heads: list[str]
    rows: list[list[str]]
    same: list[str]


def _format(value: Any, unit: str) -> str:
    if value is None:
        return ""
    if unit == "ms":
        return human_ms(float(value))
    if unit == "bytes":
        return format_size(int(value))
    if unit == "ino":
        return str(kernel_ino(value))
    if unit == "bool":
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def people_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> PeopleTable:
    """``rows`` (report records) as a person reads them: see the module docstring."""
    shown = [c for c in columns if any(c.key in r for r in rows)]
    same = []
    if rows:
        for c in [c for c in shown if c.key in CONTEXT]:
            values = {str(r[c.key]) for r in rows if r.get(c.key) is not None}
            if len(values) <= 1:
                shown.remove(c)
                if values:
                    same.append(f"{c.head} {values.pop()}")
    return PeopleTable([c.head for c in shown],
                       [[_format(r.get(c.key), c.unit) for c in shown] for r in rows], same)
