"""The in-kernel latency histograms: their bucket layout, declared once, and reading them back.

The BPF side (``bpf/hist.h``) files every ended FUSE request under (connection, opcode, bucket)
and every ended wait under (bdi, kernel stack, bucket), so counts, sums, maxima and percentiles
cover every event, also the fast ones that never become rows. The layout's constants reach the
BPF side as ``-D`` defines (:func:`defines`, through ``BuildOptions``); nothing else defines them.

Buckets are log-linear: values below ``SUB_BUCKETS`` nanoseconds have a bucket each; above, every
power of two ``[2**m, 2**(m+1))`` is split into ``SUB_BUCKETS`` equal buckets. A bucket
``[lower, upper)`` is at most ``lower / SUB_BUCKETS`` wide, so its midpoint is within
:data:`RELATIVE_ERROR` (1/16, 6.25 %) of any value in it: the stated error of a percentile read
from buckets. Values of ``2**(MAX_MSB + 1)`` ns (78 hours) and more share the last bucket, whose
upper bound is the exact maximum.

In ``meta.json`` (key ``histograms``, :data:`fusewb.contract.meta.META`) a histogram is an
object with ``count``, ``total_ns``, ``max_ns`` (exact) and ``buckets``, a list of
``[index, count]`` pairs of its non-empty buckets; :class:`Histogram` reads and merges them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SUB_BITS", "SUB_BUCKETS", "MAX_MSB", "NR_BUCKETS", "RELATIVE_ERROR", "ERROR_TEXT",
    "bucket_of", "buckets_of", "bucket_bounds", "defines", "Histogram",
]

SUB_BITS = 3
SUB_BUCKETS = 1 << SUB_BITS
MAX_MSB = 47  # the highest power of two with buckets of its own (2**47 ns: 39 hours)
NR_BUCKETS = (MAX_MSB - SUB_BITS + 2) << SUB_BITS
RELATIVE_ERROR = 1 / (2 * SUB_BUCKETS)
ERROR_TEXT = f"percentiles from in-kernel histograms, within ±{RELATIVE_ERROR:.2%}"


def bucket_of(value: int) -> int:
    """The bucket of ``value`` nanoseconds (what ``hist_bucket()`` in bpf/hist.h computes)."""
    if value < SUB_BUCKETS:
        return max(int(value), 0)
    msb = int(value).bit_length() - 1
    if msb > MAX_MSB:
        return NR_BUCKETS - 1
    return ((msb - SUB_BITS + 1) << SUB_BITS) + ((int(value) >> (msb - SUB_BITS)) & (SUB_BUCKETS - 1))


def buckets_of(values: Iterable[int] | np.ndarray) -> np.ndarray:
    """:func:`bucket_of` of every value (nanoseconds, below 2**63), vectorised."""
    values = np.maximum(np.asarray(values, dtype=np.int64), 0)
    msb = np.frexp(values.astype("float64"))[1].astype(np.int64) - 1
    msb -= (values >> np.clip(msb, 0, 62)) == 0  # float rounding up to the next power of two
    msb = np.clip(msb, SUB_BITS, 62)
    sub = (values >> (msb - SUB_BITS)) & (SUB_BUCKETS - 1)
    buckets = np.where(msb > MAX_MSB, NR_BUCKETS - 1, ((msb - SUB_BITS + 1) << SUB_BITS) + sub)
    return np.where(values < SUB_BUCKETS, values, buckets)


def bucket_bounds(index: int) -> tuple[int, int]:
    """``[lower, upper)`` in nanoseconds of bucket ``index`` (the last one's upper bound is
    nominal: it also holds every larger value)."""
    if index < SUB_BUCKETS:
        return index, index + 1
    group, sub = index >> SUB_BITS, index & (SUB_BUCKETS - 1)
    shift = group - 1
    lower = (SUB_BUCKETS + sub) << shift
    return lower, lower + (1 << shift)


def defines() -> dict[str, str]:
    """The layout as the BPF side's ``-D`` defines."""
    return {"HIST_SUB_BITS": str(SUB_BITS), "HIST_MAX_MSB": str(MAX_MSB),
            "HIST_BUCKETS": str(NR_BUCKETS)}


@dataclass
class Histogram:
    """Counts per bucket with the exact count, sum and maximum; merge with ``+=``."""

    count: int = 0
    total_ns: int = 0
    max_ns: int = 0
    buckets: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, entry: dict) -> Histogram:
        """From a ``meta.json`` histogram entry (count, total_ns, max_ns, buckets)."""
        return cls(int(entry.get("count", 0)), int(entry.get("total_ns", 0)),
                   int(entry.get("max_ns", 0)),
                   {int(i): int(n) for i, n in entry.get("buckets", ())})

    @classmethod
    def of_values(cls, values: Iterable[int] | np.ndarray) -> Histogram:
        """The histogram of exact values (nanoseconds, below 2**63): synthetic captures, the
        rows of captures written before the histograms, tests."""
        values = np.asarray(values, dtype=np.int64)
        if not len(values):
            return cls()
        index, counts = np.unique(buckets_of(values), return_counts=True)
        largest = int(np.abs(values).max())
        total = int(values.sum()) if largest < (1 << 63) // len(values) else sum(map(int, values))
        return cls(len(values), total, int(values.max()),
                   {int(i): int(n) for i, n in zip(index, counts)})

    def copy(self) -> Histogram:
        """A copy that can be added to without changing this one."""
        return Histogram(self.count, self.total_ns, self.max_ns, dict(self.buckets))

    def add(self, value: int, times: int = 1) -> None:
        index = bucket_of(value)
        self.buckets[index] = self.buckets.get(index, 0) + times
        self.count += times
        self.total_ns += value * times
        self.max_ns = max(self.max_ns, value)

    def __iadd__(self, other: Histogram) -> Histogram:
        self.count += other.count
        self.total_ns += other.total_ns
        self.max_ns = max(self.max_ns, other.max_ns)
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        return self

    def meta_buckets(self) -> list[list[int]]:
        """The buckets as ``meta.json`` stores them: ``[index, count]`` pairs, by index."""
        return [[i, n] for i, n in sorted(self.buckets.items()) if n]

    def to_meta(self) -> dict[str, Any]:
        """This histogram as a ``meta.json`` entry holds it (the inverse of :meth:`from_meta`)."""
        return {"count": self.count, "total_ns": self.total_ns, "max_ns": self.max_ns,
                "buckets": self.meta_buckets()}

    def quantile_ns(self, q: float) -> float:
        """The ``q`` quantile (0..1, nearest rank) in nanoseconds: the midpoint of its bucket
        (within :data:`RELATIVE_ERROR` of the true value), never above the exact maximum; NaN
        when empty. The buckets' counts may fall short of ``count`` (none may exceed it)."""
        filed = sum(self.buckets.values())
        if not filed:
            return math.nan
        rank = max(1, math.ceil(q * filed))
        if rank >= filed:
            return float(self.max_ns)
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                lower, upper = bucket_bounds(index)
                if index == NR_BUCKETS - 1 or self.max_ns < upper:
                    upper = max(self.max_ns + 1, lower + 1)
                return float(min((lower + upper - 1) / 2, self.max_ns or math.inf))
        return float(self.max_ns)

    def quantiles_ms(self, qs: Sequence[float]) -> list[float]:
        """:meth:`quantile_ns` of each of ``qs``, in milliseconds."""
        return [self.quantile_ns(q) / 1e6 for q in qs]
