"""The in-kernel histograms of a capture (``meta.json`` ``histograms``), grouped as the questions
group rows.

A capture of schema_version 2 counts every ended request (per connection and opcode) and every
ended wait (per bdi and kernel stack) in histograms, and has rows only for those from
``row_threshold_ms`` on and for those still going on at the end; its counts, sums, maxima and
percentiles come from the histograms (:class:`KernelCounts`, merged with the rows by
:func:`fusewb.analysis.partials.combine_stats`). A capture written before them (schema_version 1)
has none: its questions read the rows, and the request counters, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


from fusewb.analysis.capture import Capture, CaptureError, CaptureSource
from fusewb.contract.histogram import MAX_MSB, SUB_BITS, Histogram

__all__ = ["Tally", "KernelCounts", "has_histograms", "histogram_hosts", "kernel_counts",
           "row_thresholds", "bdi_of_connection"]


@dataclass
class Tally:
    """A group's histogram of every ended event, with its summed columns (requests: errors,
    bytes); merge with ``+=``."""

    hist: Histogram = field(default_factory=Histogram)
    sums: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, entry: dict[str, Any], sums: Iterable[str] = ()) -> Tally:
        """From a ``meta.json`` histogram entry, with its ``sums`` keys."""
        return cls(Histogram.from_meta(entry), {name: int(entry.get(name) or 0) for name in sums})

    def __iadd__(self, other: Tally) -> Tally:
        self.hist += other.hist
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0) + value
        return self


@dataclass(frozen=True)
class KernelCounts:
    """The tallies per group key of the hosts whose captures have histograms (``hosts``); the
    key's first item is the host."""

    hosts: frozenset[str] = frozenset()
    groups: dict[tuple[Any, ...], Tally] = field(default_factory=dict)


def _check_layout(src: CaptureSource, histograms: dict[str, Any]) -> None:
    layout = (histograms.get("sub_bits", SUB_BITS), histograms.get("max_msb", MAX_MSB))
    if layout != (SUB_BITS, MAX_MSB):
        raise CaptureError(
            f"{src.path / 'meta.json'} has histograms of another bucket layout (sub_bits "
            f"{layout[0]}, max_msb {layout[1]}; this fusewb reads {SUB_BITS}, {MAX_MSB})",
            "analyse it with the fusewb that wrote it")


def has_histograms(src: CaptureSource) -> bool:
    """Whether ``src`` counts every ended request and wait in histograms (schema_version 2 with
    ``histograms`` written; CaptureError when their bucket layout is not this fusewb's)."""
    histograms = src.meta.get("histograms")
    if int(src.meta.get("schema_version") or 1) < 2 or not isinstance(histograms, dict):
        return False
    _check_layout(src, histograms)
    return True


def histogram_hosts(cap: Capture) -> frozenset[str]:
    """The hosts of ``cap`` whose captures have histograms."""
    return frozenset(src.host for src in cap.sources if has_histograms(src))


def bdi_of_connection(connection: int) -> str:
    """The bdi name ("MAJOR:MINOR") of a FUSE connection (the kernel's dev_t, MAJOR<<20|MINOR)."""
    return f"{connection >> 20}:{connection & 0xFFFFF}"


KeyOf = Callable[[str, dict[str, Any]], tuple[Any, ...]]


def kernel_counts(cap: Capture, kind: str, key_of: KeyOf, sums: Iterable[str] = ()
                  ) -> KernelCounts:
    """The ``kind`` ("requests" or "waits") histogram entries of every host that has them,
    merged per ``key_of(host, entry)`` (a tuple starting with the host), with the ``sums`` keys
    of the entries."""
    sums = tuple(sums)
    hosts = histogram_hosts(cap)
    groups: dict[tuple[Any, ...], Tally] = {}
    for src in cap.sources:
        if src.host not in hosts:
            continue
        for entry in src.meta["histograms"].get(kind) or []:
            key = key_of(src.host, entry)
            groups.setdefault(key, Tally())
            groups[key] += Tally.from_meta(entry, sums)
    return KernelCounts(hosts, groups)


def row_thresholds(src: CaptureSource) -> dict[str, float] | None:
    """From how long (ms) a request and a wait of ``src`` became a row (``requests``, ``waits``);
    None for captures that have no histograms (every event a row)."""
    if not has_histograms(src):
        return None
    given = src.meta.get("row_threshold_ms") or {}
    threshold = float(src.meta.get("threshold_ms") or 0.0)
    return {kind: float(given.get(kind, threshold)) for kind in ("requests", "waits")}
