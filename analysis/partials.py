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

Partials:

- :func:`stats_partial` / :func:`combine_stats`: count, duration percentiles, max, total, sums
  and distinct counts per group (``wait_paths``, ``requests_by_opcode``).
- :func:`worst_partial` / :func:`combine_worst`: per group the count, total, ongoing rows and
  the worst row (flags).
- :func:`inflight_partial` / :func:`combine_inflight`: WRITEs sent and ended by given times
  (RECLAIM_THROTTLE; in flight = sent - ended, additive over slices).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "ORDER",
    "FIRST",
    "WORST",
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
_NS_PER_MS = 1_000_000


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
    """Per group of ``keys``: first row's order, count, ongoing, max_ns, total_ns, every
    ``duration_ns`` (``durations``), ``sums`` (output name -> column, nulls as 0) and the
    distinct values of the ``distinct`` columns (arrays named after them)."""
    sums = sums or {}
    distinct = list(distinct)
    columns = keys + FIRST + ["count", "ongoing", "max_ns", "total_ns", "durations",
                              *sums, *distinct]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    used = list(dict.fromkeys([*keys, *ORDER, "duration_ns", "ongoing", *sums.values(),
                               *distinct]))
    frame = frame[used].sort_values(ORDER, kind="stable")
    groups = _group_ids(frame, keys)
    count = int(groups.max()) + 1
    first = np.unique(groups, return_index=True)[1]
    duration = frame["duration_ns"].to_numpy(dtype=np.int64)
    out = _object_keys(frame.iloc[first][keys], keys).reset_index(drop=True)
    for mine, theirs in zip(FIRST, ORDER):
        out[mine] = frame[theirs].to_numpy()[first]
    out["count"] = np.bincount(groups, minlength=count).astype(np.int64)
    ongoing = frame["ongoing"].fillna(False).to_numpy(dtype=bool)
    out["ongoing"] = np.bincount(groups, weights=ongoing, minlength=count).astype(np.int64)
    out["max_ns"] = pd.Series(duration).groupby(groups).max().to_numpy()
    out["total_ns"] = pd.Series(duration).groupby(groups).sum().to_numpy()
    out["durations"] = _split(duration, groups, count)
    for name, column in sums.items():
        values = pd.Series(frame[column].to_numpy()).fillna(0).astype(np.int64)
        out[name] = values.groupby(groups).sum().to_numpy()
    for column in distinct:
        values = frame[column].to_numpy()
        out[column] = [np.unique(part) for part in _split(values, groups, count)]
    return out[columns]


def combine_stats(partials: list[pd.DataFrame], keys: list[str],
                  sums: Iterable[str] = (), distinct: Iterable[str] = ()) -> pd.DataFrame:
    """Merge :func:`stats_partial` frames: one row per group in table order of its first row,
    columns keys, count, ongoing, p50_ms, p99_ms, max_ms, total_ms, the sums, and the number of
    distinct values of each ``distinct`` column."""
    sums, distinct = list(sums), list(distinct)
    columns = keys + ["count", "ongoing", "p50_ms", "p99_ms", "max_ms", "total_ms", *sums,
                      *distinct]
    partials = [p for p in partials if len(p)]
    if not partials:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(partials, ignore_index=True).sort_values(FIRST, kind="stable")
    frame = frame.reset_index(drop=True)
    groups = _group_ids(frame, keys)
    count = int(groups.max()) + 1
    first = np.unique(groups, return_index=True)[1]
    out = frame.iloc[first][keys].reset_index(drop=True)
    grouped = frame.groupby(groups, sort=True)
    for name in ["count", "ongoing", "total_ns", *sums]:
        out[name] = grouped[name].sum().to_numpy(dtype=np.int64)
    out["max_ms"] = grouped["max_ns"].max().to_numpy(dtype="float64") / _NS_PER_MS
    out["total_ms"] = out.pop("total_ns").to_numpy(dtype="float64") / _NS_PER_MS
    everything = [[] for _ in range(count)]
    for group, durations in zip(groups, frame["durations"]):
        everything[group].append(durations)
    quantiles = np.array([np.quantile(np.concatenate(d).astype("float64") / _NS_PER_MS,
                                      [0.5, 0.99]) for d in everything])
    out["p50_ms"], out["p99_ms"] = quantiles[:, 0], quantiles[:, 1]
    for column in distinct:
        seen = [[] for _ in range(count)]
        for group, values in zip(groups, frame[column]):
            seen[group].append(values)
        out[column] = np.array([len(pd.unique(np.concatenate(v))) for v in seen], dtype=np.int64)
    return out[columns]


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
