"""The flag engine: a flag is one :class:`Flag` declaration, :func:`run_flags` runs any list of
them and builds the common columns (:data:`FLAG_COLUMNS`) once.

A declaration names the events it needs (tables or ``vm:<kind>``, as
:func:`fusewb.analysis.common.requires` names them), the rows it selects, its severity rule, its
evidence line and the kernel mechanism behind it. It selects rows in one of two ways:

- ``select`` on the rows of a big table (``table``: waits or requests): a mask over any slice of
  that table's rows. The scan engines (:mod:`fusewb.analysis.scan`) make one
  :func:`~fusewb.analysis.partials.worst_partial` per slice and flag (:func:`flag_partials`)
  and merge them (:func:`combine_flag_partials`), so the pandas, streaming and Dask engines
  raise the same rows: per group of ``keys``, the count, total, ongoing rows and the worst row
  with its ``carry`` columns.
- ``rows`` on the whole capture (small tables and meta): a function of the capture, the scan and
  the threshold returning rows with the common columns it knows.

``also`` (an :class:`Also`) raises the flag a second way, from the rows another flag raised;
``amend`` corrects a flag's finished rows. The flags fusewb raises are declared in :mod:`fusewb.analysis.findings`;
:func:`by_duration`, :func:`fixed` and :func:`by_total` are the severity rules they share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture
from fusewb.analysis.partials import ORDER, combine_worst, worst_partial
from fusewb.analysis.scanned import Scan
from fusewb.contract.defaults import high_severity_ms
from fusewb.contract.units import NS_PER_MS
__all__ = [
    "Flag", "Also", "FLAG_COLUMNS", "SEVERITIES", "Rule", "Select", "by_duration", "fixed", "by_total",
    "flag_needs", "flag_partials", "combine_flag_partials", "run_flags", "empty_flags",
]

SEVERITIES = ["critical", "high", "medium", "low"]

FLAG_COLUMNS = ["flag", "severity", "host", "path", "pid", "tgid", "comm", "mount", "bdi", "ino",
                "duration_ms", "ongoing", "count", "total_ms", "evidence", "mechanism"]

Rule = Callable[[pd.DataFrame, float], Any]  # (rows, threshold_ms) -> severities or evidence
Select = Callable[[pd.DataFrame, float, "set[tuple[str, str, int]]"], np.ndarray]


@dataclass(frozen=True)
class Also:
    """A flag's second rule: rows made from the frame another flag (``derived_from``) raised,
    run right after that flag and only when it ran, with their own severity and evidence."""

    derived_from: str
    rows: Callable[[Capture, Scan, pd.DataFrame], pd.DataFrame]
    severity: Rule
    evidence: Rule


@dataclass(frozen=True)
class Flag:
    """One flag, declared once: what it needs, the rows it selects, its severity, evidence and
    mechanism (see the module docstring for ``select``/``rows``).

    ``severity`` and ``evidence`` get the selected rows and the threshold. Rows of a ``select``
    flag carry ``keys`` and ``carry`` of their worst row, ``duration_ms`` (the worst), ``count``,
    ``total_ms`` and ``still`` (ongoing rows; ``ongoing`` is ``still > 0``); rows of a ``rows``
    flag carry what that function gives (missing common columns are null). ``also`` raises the
    same flag from another flag's rows too.
    """

    name: str
    raised_when: str
    needs: tuple[str, ...]
    mechanism: str
    severity: Rule
    evidence: Rule
    table: str | None = None
    select: Select | None = None
    keys: tuple[str, ...] = ()
    carry: tuple[str, ...] = ()
    rows: Callable[[Capture, Scan, Any], pd.DataFrame] | None = None
    also: Also | None = None
    amend: Callable[[Capture, pd.DataFrame, float], pd.DataFrame] | None = None


def empty_flags() -> pd.DataFrame:
    """A frame of :data:`FLAG_COLUMNS` without rows."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in FLAG_COLUMNS})


def by_duration(rows: pd.DataFrame, threshold_ms: float) -> np.ndarray:
    """critical while ongoing, high from :func:`high_severity_ms`, else medium."""
    return np.select([rows["still"].to_numpy() > 0,
                      rows["duration_ms"].to_numpy() >= high_severity_ms(threshold_ms)],
                     ["critical", "high"], "medium")


def fixed(level: str) -> Rule:
    """critical while ongoing, else ``level``."""
    def severity(rows: pd.DataFrame, threshold_ms: float) -> np.ndarray:
        return np.where(rows["still"].to_numpy() > 0, "critical", level)

    return severity


def by_total(*levels: tuple[float, str], below: str) -> Rule:
    """The level of the first ``(ms, level)`` that ``duration_ms`` reaches, else ``below``."""
    def severity(rows: pd.DataFrame, threshold_ms: float) -> np.ndarray:
        total = rows["duration_ms"].to_numpy(dtype="float64")
        return np.select([total >= ms for ms, _ in levels], [level for _, level in levels], below)

    return severity


def flag_needs(declared: Iterable[Flag]) -> list[str]:
    """The tables and ``vm:<kind>`` events the ``declared`` flags need, in declaration order."""
    return list(dict.fromkeys(n for flag in declared for n in flag.needs))


def flag_partials(table: str, rows: pd.DataFrame, threshold_ms: float,
                  servers: set[tuple[str, str, int]], declared: Iterable[Flag]
                  ) -> dict[str, pd.DataFrame]:
    """flag -> :func:`worst_partial` of the rows each ``select`` flag on ``table`` selects in a
    slice of that table (derived and order columns present); merge with
    :func:`combine_flag_partials`."""
    out = {}
    for flag in declared:
        if flag.table != table or flag.select is None:
            continue
        keys, carry = list(flag.keys), list(flag.carry)
        if rows.empty:
            out[flag.name] = worst_partial(rows, keys, carry)
            continue
        used = list(dict.fromkeys([*keys, *carry, *ORDER, "duration_ns", "ongoing"]))
        mask = flag.select(rows, threshold_ms, servers)
        out[flag.name] = worst_partial(rows.loc[mask, used], keys, carry)
    return out


def combine_flag_partials(partials: list[dict[str, pd.DataFrame]],
                          declared: Iterable[Flag]) -> dict[str, pd.DataFrame]:
    """The :func:`flag_partials` of every slice, merged per flag (:func:`combine_worst`)."""
    return {flag.name: combine_worst([p[flag.name] for p in partials if flag.name in p],
                                     list(flag.keys))
            for flag in declared if flag.select is not None}


def _objects(rows: pd.DataFrame, column: str) -> pd.Series | None:
    return rows[column].astype(object) if column in rows else None


def _ints(rows: pd.DataFrame, column: str) -> Any:
    if column in rows:
        return rows[column].astype("Int64")
    return pd.array([None] * len(rows), dtype="Int64")


def _floats(rows: pd.DataFrame, column: str) -> Any:
    return rows[column].astype("float64") if column in rows else np.nan


def _build(flag: Flag | Also, name: str, mechanism: str, rows: pd.DataFrame, threshold_ms: float
           ) -> pd.DataFrame:
    """The common columns of a flag's rows (by ``flag``'s severity and evidence rules), built
    once for every flag."""
    if rows.empty:
        return empty_flags()
    rows = rows.reset_index(drop=True)
    if "still" in rows:
        ongoing = rows["still"].to_numpy() > 0
    else:
        ongoing = rows["ongoing"].to_numpy(dtype=bool)
    return pd.DataFrame({
        "flag": name,
        "severity": flag.severity(rows, threshold_ms),
        "host": rows["host"].astype(object),
        "path": _objects(rows, "path"),
        "pid": _ints(rows, "pid"),
        "tgid": _ints(rows, "tgid"),
        "comm": _objects(rows, "comm"),
        "mount": _objects(rows, "mount"),
        "bdi": _objects(rows, "bdi"),
        "ino": _ints(rows, "ino"),
        "duration_ms": _floats(rows, "duration_ms"),
        "ongoing": ongoing,
        "count": rows["count"].to_numpy().astype(np.int64),
        "total_ms": _floats(rows, "total_ms"),
        "evidence": list(flag.evidence(rows, threshold_ms)),
        "mechanism": mechanism,
    })


def _selected(flag: Flag, cap: Capture, scan: Scan, threshold_ms: float) -> pd.DataFrame:
    """The rows a flag selects (empty when there are none)."""
    if flag.select is not None:
        if flag.name not in scan.flag_rows:
            raise ValueError(f"the scan has no rows for {flag.name}: pass the same flags to scan()")
        merged = scan.flag_rows[flag.name]
        if merged.empty:
            return merged
        return merged.assign(
            duration_ms=merged["duration_ns"].to_numpy(dtype="float64") / NS_PER_MS,
            total_ms=merged["total_ns"].to_numpy(dtype="float64") / NS_PER_MS)
    if flag.rows is None:
        raise ValueError(f"flag {flag.name} declares neither select nor rows")
    return flag.rows(cap, scan, threshold_ms)


def _rules(declared: list[Flag]) -> list[tuple[Flag, Also | None]]:
    """Each flag's rule in declaration order, each ``also`` rule right after the flag it reads."""
    out: list[tuple[Flag, Also | None]] = []
    for flag in declared:
        out.append((flag, None))
        out += [(other, other.also) for other in declared
                if other.also is not None and other.also.derived_from == flag.name]
    return out


def run_flags(cap: Capture, threshold_ms: float, scan: Scan, declared: Iterable[Flag]
              ) -> pd.DataFrame:
    """The engine: the rows of every ``declared`` flag whose needs the capture recorded, most
    severe and longest first (columns :data:`FLAG_COLUMNS`, documented by
    :func:`fusewb.analysis.flagging.flags`); ``attrs["not_checked"]``: flag -> what is missing.
    ``scan`` must come from :func:`fusewb.analysis.scan.scan` with the same ``declared``."""
    declared = list(declared)
    not_checked: dict[str, str] = {}
    built: dict[str, pd.DataFrame] = {}
    pieces: list[pd.DataFrame] = []
    for flag, also in _rules(declared):
        lacking = [n for n in flag.needs if not cap.recorded(n)]
        if lacking:
            not_checked[flag.name] = f"the capture has no {', '.join(lacking)} events"
            continue
        if also is None:
            frame = _build(flag, flag.name, flag.mechanism,
                           _selected(flag, cap, scan, threshold_ms), threshold_ms)
            if flag.amend is not None:
                frame = flag.amend(cap, frame, threshold_ms)
        else:
            base = built.get(also.derived_from)
            rows = pd.DataFrame() if base is None or base.empty else also.rows(cap, scan, base)
            frame = _build(also, flag.name, flag.mechanism, rows, threshold_ms)
        built[flag.name] = frame
        pieces.append(frame)
    pieces = [p for p in pieces if len(p)]
    if not pieces:
        out = empty_flags()
    else:
        out = pd.concat([p.astype({"pid": "Int64", "tgid": "Int64", "ino": "Int64"})
                         for p in pieces], ignore_index=True)
        out["duration_ms"] = out["duration_ms"].astype("float64")
        out["total_ms"] = out["total_ms"].astype("float64")
        out["ongoing"] = out["ongoing"].astype(bool)
        rank = out["severity"].map({s: i for i, s in enumerate(SEVERITIES)})
        order = np.lexsort((-out["duration_ms"].fillna(0).to_numpy(), rank.to_numpy()))
        out = out.iloc[order].reset_index(drop=True)
        for column in ("flag", "severity", "host", "path", "comm", "mount", "bdi"):
            out[column] = out[column].astype("category")
    out.attrs["not_checked"] = not_checked
    return out[FLAG_COLUMNS]
