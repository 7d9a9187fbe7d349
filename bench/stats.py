"""Interleaving, medians and spreads, and the one results table every part of the bench fills.

Noisy machines: each repetition runs every variant once, in an order rotated by one per
repetition (:func:`interleaved`), so slow drift hits every variant alike. A variant's ratio to
its baseline is taken per repetition (paired) and summarised like the values: median, min-max.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["Spread", "Row", "PartResult", "interleaved", "paired_ratios", "fmt_number",
           "render_text", "render_markdown", "COLUMNS"]

T = TypeVar("T")

COLUMNS = ["part", "case", "variant", "median", "spread", "unit", "ratio", "ratio spread",
           "ratio to", "target", "met"]


@dataclass(frozen=True)
class Spread:
    """Median and range of repeated measurements."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        if not values:
            raise ValueError("no samples")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def text(self) -> str:
        if self.n == 1:
            return "n=1"
        return f"{fmt_number(self.low)}-{fmt_number(self.high)} (n={self.n})"


@dataclass
class Row:
    """One line of the results table: a measured value and, where it has one, its ratio."""

    part: str
    case: str
    variant: str
    unit: str
    value: Spread
    ratio: Spread | None = None
    ratio_to: str = ""  # what the ratio divides by: a baseline variant or a target value
    target: str = ""  # the target for this row, in words
    met: bool | None = None  # None: no target on this row

    def cells(self) -> list[str]:
        met = "" if self.met is None else ("yes" if self.met else "NO")
        return [
            self.part, self.case, self.variant, fmt_number(self.value.median), self.value.text(),
            self.unit, fmt_number(self.ratio.median) if self.ratio else "",
            self.ratio.text() if self.ratio else "", self.ratio_to, self.target, met,
        ]


@dataclass
class PartResult:
    """What one part of the bench measured: table rows, and notes for RESULTS.md."""

    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # method, profile evidence, bounds
    seconds: float = 0.0


def interleaved(variants: Sequence[T], repetitions: int) -> Iterator[tuple[int, T]]:
    """(repetition, variant) with every variant once per repetition, order rotated each time."""
    n = len(variants)
    for rep in range(repetitions):
        shift = rep % n if n else 0
        for variant in [*variants[shift:], *variants[:shift]]:
            yield rep, variant


def paired_ratios(values: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """values[i] / baseline[i] for the repetitions where the baseline is non-zero."""
    return [v / b for v, b in zip(values, baseline, strict=True) if b]


def fmt_number(x: float) -> str:
    """About three significant digits, thousands separated: 0.973, 12.3, 1,230, 104,000."""
    if x != x:  # NaN
        return "nan"
    magnitude = abs(x)
    if magnitude >= 1000:
        return f"{x:,.0f}"
    if magnitude >= 100:
        return f"{x:.0f}"
    if magnitude >= 10:
        return f"{x:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{x:.2f}"
    return f"{x:.3f}"


def render_text(rows: Sequence[Row]) -> str:
    """An aligned plain-text table of ``rows``."""
    table = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
             for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def render_markdown(rows: Sequence[Row]) -> str:
    """A Markdown table of ``rows``."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row.cells()) + " |"
              for row in rows]
    return "\n".join(lines)
