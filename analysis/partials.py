"""The questions on the big tables (waits, requests) as partial answers per slice of rows and one
combine step, so that every engine answers them with the same code.

A *slice* is any set of rows of one table with the derived columns of :func:`waits` or
:func:`fuse_requests` and three order columns (:data:`ORDER`: host index, time, sequence) that
sort rows as the whole table sorted by host and time would be. The pandas engine passes the whole
table as one slice; the streaming and Dask engines pass one Parquet part at a time. Each
``*_partial(slice)`` returns a small frame (one row per group); ``combine_*(partials)`` merges any
number of them into the answer. Counts, sums (integer nanoseconds), maxima, distinct counts and
percentiles are exact: a partial keeps every duration of its groups (8 bytes per row, the only
part of a partial that grows with the rows; the rest grows with the groups and their distinct
values), so p50/p99 are computed on all of them. Ties go to the first row in table order, as
with the whole table.

Where a host's capture has in-kernel histograms (:mod:`fusewb.analysis.histograms`), the
combine step takes every ended event's count, sum, maximum and percentiles (bucket midpoints,
within :data:`~fusewb.contract.histogram.RELATIVE_ERROR`) from them, and from the rows only what is
still going on at the end; the rows' own count is then ``rows``.

Partials:

- :func:`stats_partial` / :func:`combine_stats`: count, duration percentiles, mean, max, total,
  sums and distinct counts per group (``wait_paths``, ``requests_by_opcode``).
- :func:`worst_partial` / :func:`combine_worst`: per group the count, total, ongoing rows and
  the worst row (flags).
- :func:`inflight_partial` / :func:`combine_inflight`: WRITEs sent and ended by given times
  (RECLAIM_THROTTLE; in flight = sent - ended, additive over slices).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fusewb.analysis.histograms import KernelCounts, Tally
from fusewb.contract.histogram import RELATIVE_ERROR, Histogram
from fusewb.contract.units import NS_PER_MS

__all__ = [
    "ORDER",
    "FIRST",
    "WORST",
    "QUANTILES",
    "STATS",
    "ERROR_PCT",
    "with_order",
    "stats_partial",
    "combine_stats",
    "worst_partial",
    "combine_worst",
    "inflight_partial",
    "combine_inflight",
    "end_times",
]

ORDER = ["_oh", "_ot", "_os"]  # host index, time, sequence in table order
FIRST = ["_fh", "_ft", "_fs"]  # order of a group's first row
WORST = ["_wh", "_wt", "_ws"]  # order of a group's worst row
ERROR_PCT = RELATIVE_ERROR * 100  # percentile_error_pct of percentiles from buckets
QUANTILES = (0.5, 0.9, 0.99)  # p50_ms, p90_ms, p99_ms
# What combine_stats gives each group, after its keys and before its sums and distinct counts.
STATS = ["count", "rows", "ongoing", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms",
         "total_ms", "percentile_error_pct"]


def with_order(frame: pd.DataFrame, hosts: Sequence[str], time: str, first_seq: int | None = 0,
               host_index: int | None = None) -> pd.DataFrame:
    """``frame`` with the :data:`ORDER` columns: its host's index (or ``host_index``), ``time``
    (0 when "") and ``first_seq`` + row number (rows must be in table order), or with
    ``first_seq`` None the sequence numbers already in its ``_os`` column."""
    out = frame.copy(deep=False)  # new columns only: the caller's frame stays as it is
    if host_index is None:
        codes = pd.Categorical(frame["host"].astype(object), categories=list(hosts)).codes
        out["_oh"] = codes.astype(np.int64)
    else:
        out["_oh"] = np.int64(host_index)
    out["_ot"] = frame[time].to_numpy(dtype=np.int64) if time else np.int64(0)
    if first_seq is not None:
        out["_os"] = np.arange(first_seq, first_seq + len(frame), dtype=np.int64)
    return out


def _group_ids(frame: pd.DataFrame, keys: list[str]) -> np.ndarray:
    return frame.groupby(keys, observed=True, sort=False, dropna=False).ngroup().to_numpy()


def _object_keys(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.astype({k: object for k in keys})


def _split(values: np.ndarray, groups: np.ndarray, count: int) -> list[np.ndarray]:
    order = np.argsort(groups, kind="stable")
    bounds = np.cumsum(np.bincount(groups, minlength=count))[:-1]
    return np.split(values[order], bounds)


def stats_partial(frame: pd.DataFrame, keys: list[str], sums: dict[str, str] | None = None,
                  distinct: Iterable[str] = ()) -> pd.DataFrame:
    """Per group of ``keys``: first row's order, count (rows), ongoing, every ``duration_ns``
    of the ended rows (``durations``) and of the ongoing ones (``ongoing_durations``), ``sums``
    (output name -> column, nulls as 0) of the ended rows and of the ongoing ones (named
    ``ongoing_<name>``), and the distinct values of the ``distinct`` columns (arrays named after
    them)."""
    sums = sums or {}
    distinct = list(distinct)
    columns = keys + FIRST + ["count", "ongoing", "durations", "ongoing_durations", *sums,
                              *(f"ongoing_{name}" for name in sums), *distinct]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    used = list(dict.fromkeys([*keys, *ORDER, "duration_ns", "ongoing", *sums.values(),
                               *distinct]))
    frame = frame[used].sort_values(ORDER, kind="stable")
    groups = _group_ids(frame, keys)
    count = int(groups.max()) + 1
    first = np.unique(groups, return_index=True)[1]
    duration = frame["duration_ns"].to_numpy(dtype=np.int64)
    ongoing = frame["ongoing"].fillna(False).to_numpy(dtype=bool)
    out = _object_keys(frame.iloc[first][keys], keys).reset_index(drop=True)
    for mine, theirs in zip(FIRST, ORDER):
        out[mine] = frame[theirs].to_numpy()[first]
    out["count"] = np.bincount(groups, minlength=count).astype(np.int64)
    out["ongoing"] = np.bincount(groups, weights=ongoing, minlength=count).astype(np.int64)
    out["durations"] = _split(duration[~ongoing], groups[~ongoing], count)
    out["ongoing_durations"] = _split(duration[ongoing], groups[ongoing], count)
    for name, column in sums.items():
        values = pd.Series(frame[column].to_numpy()).fillna(0).astype(np.int64).to_numpy()
        out[name] = np.bincount(groups[~ongoing], weights=values[~ongoing],
                                minlength=count).astype(np.int64)
        out[f"ongoing_{name}"] = np.bincount(groups[ongoing], weights=values[ongoing],
                                             minlength=count).astype(np.int64)
    for column in distinct:
        values = frame[column].to_numpy()
        out[column] = [np.unique(part) for part in _split(values, groups, count)]
    return out[columns]


def _rows_stats(ended: np.ndarray, ongoing: np.ndarray) -> dict[str, Any]:
    """count, mean, percentiles (exact: numpy's linear interpolation), max and total of rows."""
    values = np.concatenate([ended, ongoing])
    if not len(values):
        return {"count": 0, "mean_ms": np.nan, "p50_ms": np.nan, "p90_ms": np.nan,
                "p99_ms": np.nan, "max_ms": np.nan, "total_ms": 0.0, "percentile_error_pct": 0.0}
    total = int(values.sum())
    quantiles = np.quantile(values.astype("float64") / NS_PER_MS, QUANTILES)
    return {"count": len(values), "mean_ms": total / len(values) / NS_PER_MS,
            **dict(zip(STATS[4:7], quantiles)), "max_ms": float(values.max()) / NS_PER_MS,
            "total_ms": total / NS_PER_MS, "percentile_error_pct": 0.0}


def _histogram_stats(hist: Histogram, ongoing: np.ndarray) -> dict[str, Any]:
    """The same of every ended event (``hist``) and the ``ongoing`` rows (time so far)."""
    everything = hist.copy()
    for value in ongoing:
        everything.add(int(value))
    count = everything.count
    return {"count": count,
            "mean_ms": everything.total_ns / count / NS_PER_MS if count else np.nan,
            **dict(zip(STATS[4:7], everything.quantiles_ms(QUANTILES))),
            "max_ms": everything.max_ns / NS_PER_MS if count else np.nan,
            "total_ms": everything.total_ns / NS_PER_MS, "percentile_error_pct": ERROR_PCT}


@dataclass
class _Group:
    """What the partials of every slice hold of one group."""

    key: tuple[Any, ...]
    rows: int = 0
    ongoing: int = 0
    durations: list[np.ndarray] = field(default_factory=list)
    ongoing_durations: list[np.ndarray] = field(default_factory=list)
    sums: dict[str, int] = field(default_factory=dict)
    ongoing_sums: dict[str, int] = field(default_factory=dict)
    distinct: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def answer(self, kernel: KernelCounts, sums: list[str], distinct: list[str]
               ) -> dict[str, Any]:
        """The group's row of :func:`combine_stats`."""
        ended = _concat(self.durations)
        ongoing = _concat(self.ongoing_durations)
        out: dict[str, Any] = {"rows": self.rows, "ongoing": self.ongoing}
        if self.key[0] in kernel.hosts:
            tally = kernel.groups.get(self.key, Tally())
            if len(ended) > tally.hist.count:  # histograms written before these rows (kill -9)
                tally = Tally(Histogram.of_values(ended), dict(self.sums))
            out.update(_histogram_stats(tally.hist, ongoing))
            out.update({name: tally.sums.get(name, 0) + self.ongoing_sums.get(name, 0)
                        for name in sums})
        else:
            out.update(_rows_stats(ended, ongoing))
            out.update({name: self.sums.get(name, 0) + self.ongoing_sums.get(name, 0)
                        for name in sums})
        for column in distinct:
            seen = self.distinct.get(column, [])
            out[column] = len(pd.unique(np.concatenate(seen))) if seen else 0
        return out


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, dtype=np.int64)


def combine_stats(partials: list[pd.DataFrame], keys: list[str], sums: Iterable[str] = (),
                  distinct: Iterable[str] = (), kernel: KernelCounts | None = None
                  ) -> pd.DataFrame:
    """Merge :func:`stats_partial` frames with the in-kernel histograms of the groups
    (``kernel``, keyed by the values of ``keys``): one row per group, first the groups with rows
    in table order of their first row, then those only in the histograms. Columns: keys,
    :data:`STATS`, the sums, and the number of distinct values of each ``distinct`` column.

    A group of a host with histograms: count, mean, percentiles (bucket midpoints:
    ``percentile_error_pct`` is :data:`RELATIVE_ERROR` in percent), max, total and sums of every
    ended event (the histogram) and of the rows still going on at the end (their time so far);
    else of its rows (exact percentiles, error 0). ``rows``: the group's rows; ``ongoing``: those going on."""
    sums, distinct = list(sums), list(distinct)
    kernel = kernel or KernelCounts()
    columns = keys + STATS + sums + distinct
    groups: dict[tuple[Any, ...], _Group] = {}
    partials = [p for p in partials if len(p)]
    if partials:
        frame = pd.concat(partials, ignore_index=True).sort_values(FIRST, kind="stable")
        for row in frame.to_dict("records"):
            key = tuple(None if _missing(row[k]) else row[k] for k in keys)
            group = groups.setdefault(key, _Group(key))
            group.rows += int(row["count"])
            group.ongoing += int(row["ongoing"])
            group.durations.append(row["durations"])
            group.ongoing_durations.append(row["ongoing_durations"])
            for name in sums:
                group.sums[name] = group.sums.get(name, 0) + int(row[name])
                group.ongoing_sums[name] = (group.ongoing_sums.get(name, 0)
                                            + int(row[f"ongoing_{name}"]))
            for column in distinct:
                group.distinct.setdefault(column, []).append(row[column])
    for key in sorted(set(kernel.groups) - set(groups), key=lambda k: tuple(map(str, k))):
        groups[key] = _Group(key)
    if not groups:
        return pd.DataFrame(columns=columns)
    out = pd.DataFrame([{**dict(zip(keys, key)), **group.answer(kernel, sums, distinct)}
                        for key, group in groups.items()], columns=columns)
    integers = ["count", "rows", "ongoing", *sums, *distinct]
    return out.astype({**{c: np.int64 for c in integers},
                       **{c: "float64" for c in STATS if c not in integers}})


def worst_partial(frame: pd.DataFrame, keys: list[str], carry: list[str]) -> pd.DataFrame:
    """Per group of ``keys``: count, total_ns, still (ongoing rows), its first row's order, and
    its worst row (longest ``duration_ns``, the first in table order among equals) with the
    ``carry`` columns and that row's order."""
    columns = keys + carry + ["duration_ns", "count", "total_ns", "still"] + FIRST + WORST
    if frame.empty:
        return pd.DataFrame(columns=columns)
    used = list(dict.fromkeys([*keys, *carry, *ORDER, "duration_ns", "ongoing"]))
    frame = frame[used].sort_values(ORDER, kind="stable").reset_index(drop=True)
    grouped = frame.groupby(keys, observed=True, sort=False, dropna=False)
    worst = frame.loc[grouped["duration_ns"].idxmax().to_numpy()].reset_index(drop=True)
    out = _object_keys(worst[keys + carry + ["duration_ns"]], keys)
    out["count"] = grouped.size().to_numpy(dtype=np.int64)
    out["total_ns"] = grouped["duration_ns"].sum().to_numpy(dtype=np.int64)
    out["still"] = grouped["ongoing"].sum().to_numpy(dtype=np.int64)
    firsts = grouped[ORDER].first()
    for mine, theirs in zip(FIRST, ORDER):
        out[mine] = firsts[theirs].to_numpy()
    for mine, theirs in zip(WORST, ORDER):
        out[mine] = worst[theirs].to_numpy()
    return out[columns]


def combine_worst(partials: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """Merge :func:`worst_partial` frames: one row per group, groups in table order of their
    first row, with the worst row's columns and count, total_ns, still summed."""
    partials = [p for p in partials if len(p)]
    if not partials:
        return pd.DataFrame(columns=keys + ["duration_ns", "count", "total_ns", "still"])
    frame = pd.concat(partials, ignore_index=True)
    frame["_g"] = _group_ids(frame, keys)
    sums = frame.groupby("_g")[["count", "total_ns", "still"]].sum()
    worst = frame.sort_values(["duration_ns", *WORST], ascending=[False, True, True, True],
                              kind="stable").drop_duplicates("_g").set_index("_g")
    order = frame.sort_values(FIRST, kind="stable").drop_duplicates("_g")["_g"].to_numpy()
    out = worst.loc[order].drop(columns=["count", "total_ns", "still"])
    out = out.join(sums).reset_index(drop=True)
    return out.astype({"count": np.int64, "total_ns": np.int64, "still": np.int64,
                       "duration_ns": np.int64})


def end_times(frame: pd.DataFrame) -> np.ndarray:
    """End of each request (float ns): ``end_ts_ns``, else send + duration; ongoing ones never
    end (inf)."""
    ends = frame["end_ts_ns"].astype("float64").to_numpy(copy=True)
    fallback = (frame["send_ts_ns"] + frame["duration_ns"]).astype("float64").to_numpy()
    missing = np.isnan(ends)
    ends[missing] = fallback[missing]
    ends[frame["ongoing"].fillna(False).to_numpy(dtype=bool)] = np.inf
    return ends


def inflight_partial(writes: pd.DataFrame, times: dict[str, np.ndarray]) -> pd.DataFrame:
    """For each (host, bdi) of the WRITE rows ``writes`` and the ``times`` of that host: the
    first row's order, and per time how many were sent (``sent``) and ended (``ended``) by then."""
    columns = ["host", "bdi", *FIRST, "sent", "ended"]
    rows = []
    if writes.empty or not times:
        return pd.DataFrame(columns=columns)
    used = ["host", "bdi", "send_ts_ns", "end_ts_ns", "duration_ns", "ongoing", *ORDER]
    writes = writes.loc[writes["host"].astype(object).isin(list(times)), used]
    if writes.empty:
        return pd.DataFrame(columns=columns)
    writes = writes.sort_values(ORDER, kind="stable")
    for (host, bdi), group in writes.groupby(["host", "bdi"], observed=True, sort=False):
        at = np.asarray(times[str(host)], dtype="float64")
        sends = np.sort(group["send_ts_ns"].to_numpy(dtype="float64"))
        ends = np.sort(end_times(group))
        first = group[ORDER].iloc[0].to_numpy()
        rows.append([str(host), str(bdi), *first, np.searchsorted(sends, at, "right"),
                     np.searchsorted(ends, at, "right")])
    return pd.DataFrame(rows, columns=columns)


def combine_inflight(partials: list[pd.DataFrame]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """host -> [(bdi, WRITEs in flight at each time)], bdis in table order of their first
    WRITE."""
    partials = [p for p in partials if len(p)]
    if not partials:
        return {}
    frame = pd.concat(partials, ignore_index=True).sort_values(FIRST, kind="stable")
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for (host, bdi), group in frame.groupby(["host", "bdi"], sort=False):
        level = np.sum(np.stack(group["sent"].to_list()), axis=0) \
            - np.sum(np.stack(group["ended"].to_list()), axis=0)
        out.setdefault(str(host), []).append((str(bdi), level.astype(np.int64)))
    return out
