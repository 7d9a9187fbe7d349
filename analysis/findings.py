"""Flags: the findings a kernel or storage engineer acts on, one row per (flag, task, file...).

:func:`flags` returns one DataFrame with the columns of :data:`FLAG_COLUMNS`; rows of the same
flag, host, path, bdi, task and inode are merged (``count``, ``total_ms``; ``duration_ms`` and the
evidence are the worst one's). Flags whose events the capture lacks are listed in
``frame.attrs["not_checked"]`` (flag -> reason) instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture, CaptureSource
from fusewb.analysis.common import NS_PER_MS
from fusewb.analysis.partials import ORDER, combine_worst, inflight_partial, worst_partial
from fusewb.analysis.requests import WRITE
from fusewb.analysis.vm import VMSCAN_THROTTLE_WRITEBACK, dirty_throttling, vm_events
from fusewb.analysis.waiting import unseen_waits
from fusewb.contract.defaults import KERNEL_ENDED_ERRORS, THRESHOLD_MS, high_severity_ms
from fusewb.contract.schema import TABLES
from fusewb.contract.units import format_size

if TYPE_CHECKING:
    from fusewb.analysis.scan import Scan

__all__ = [
    "FlagKind",
    "FLAG_KINDS",
    "FLAG_NAMES",
    "FLAG_COLUMNS",
    "SEVERITIES",
    "flags",
    "parse_flag_names",
    "answered_partial",
    "server_tgids",
    "unseen_fuse_waits",
    "wait_flag_partials",
    "combine_wait_flag",
    "combine_stalls",
    "stall_partial",
    "throttle_times",
    "inflight_writes_partial",
]

SEVERITIES = ["critical", "high", "medium", "low"]


@dataclass(frozen=True)
class FlagKind:
    """A flag: what raises it, the events it needs, and the kernel mechanism behind it."""

    name: str
    raised_when: str
    needs: tuple[str, ...]
    mechanism: str


FLAG_KINDS: dict[str, FlagKind] = {
    k.name: k
    for k in [
        FlagKind(
            "BLOCKED_WAIT", "a wait on FUSE writeback at or over the threshold", ("waits",),
            "folio_wait_writeback sleeps until the FUSE server answers the WRITE covering the "
            "folio, so the server's latency becomes this task's latency",
        ),
        FlagKind(
            "RECLAIM_WAIT", "any wait on FUSE writeback inside memory reclaim", ("waits",),
            "reclaim waiting on a folio under FUSE writeback ties memory reclaim to a user-space "
            "server: a server that needs memory to answer deadlocks (kernels before 6.16 "
            "waited here; 6.16+ skips such folios)",
        ),
        FlagKind(
            "MIGRATION_WAIT", "any wait on FUSE writeback inside migration or compaction",
            ("waits",),
            "migration in MIGRATE_SYNC mode waits for writeback to end; a FUSE server decides "
            "when that is, so compaction, CMA and memory hot-unplug stall behind it (still "
            "true after 6.16)",
        ),
        FlagKind(
            "SYNC_WAIT", "any wait on FUSE writeback inside sync(2)/syncfs(2)", ("waits",),
            "sync(2) waits for writeback on every filesystem, so one FUSE server that never "
            "answers hangs every sync on the host: an unprivileged DoS (6.16 up to the fix "
            "that skips the integrity wait for FUSE)",
        ),
        FlagKind(
            "SERVER_SELF_WAIT",
            "the waiter (on FUSE writeback, or throttled in reclaim on writeback while WRITEs "
            "were in flight) is a thread of the FUSE server of that connection",
            ("waits",),
            "the server sleeps on writeback that only its own replies can end: when the thread "
            "that must answer the WRITE is the one waiting, the connection deadlocks",
        ),
        FlagKind(
            "STALLED_REQUEST", "a FUSE WRITE outstanding over the threshold or never completed",
            ("requests",),
            "folios stay under writeback until the server replies to their WRITE (6.16+: no "
            "temp-page copy), so a held request keeps every waiter on those folios asleep; "
            "6.15+ request timeouts can bound it",
        ),
        FlagKind(
            "DIRTY_THROTTLE", "balance_dirty_pages paused a writer on a FUSE bdi", ("throttle",),
            "a FUSE bdi gets max_ratio 1% of the dirty limit, so balance_dirty_pages pauses "
            "writers early to keep its dirty + writeback pages under that share",
        ),
        FlagKind(
            "RECLAIM_THROTTLE",
            "reclaim throttled on writeback while FUSE WRITEs were in flight",
            ("vm:vmscan_throttled", "requests"),
            "reclaim met folios under writeback and slept in reclaim_throttle(WRITEBACK) for "
            "writeback progress, which in-flight FUSE WRITEs make only at the server's pace",
        ),
        FlagKind(
            "INCOMPLETE_CAPTURE",
            "lost events, a tracer that did not stop cleanly or stopped early, parts missing, "
            "unreadable or dropped by --max-size, or full maps", (),
            "the ring buffer dropped events, the tracer did not flush at exit or parts of the "
            "capture were lost, damaged or dropped to keep it within --max-size: counts are "
            "lower bounds and ongoing waits may be missing",
        ),
    ]
}
FLAG_NAMES: list[str] = list(FLAG_KINDS)

FLAG_COLUMNS = ["flag", "severity", "host", "path", "pid", "tgid", "comm", "mount", "bdi", "ino",
                "duration_ms", "ongoing", "count", "total_ms", "evidence", "mechanism"]

_WAIT_KEYS = ["host", "path", "bdi", "pid", "ino"]
_PATH_FLAGS = {"RECLAIM_WAIT": "reclaim", "MIGRATION_WAIT": "migration", "SYNC_WAIT": "sync"}


def parse_flag_names(text: str | None) -> list[str]:
    """``"BLOCKED_WAIT,sync_wait"`` -> names; raises ValueError naming unknown ones."""
    if not text:
        return []
    names = [part.strip().upper() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in FLAG_KINDS]
    if unknown:
        raise ValueError(", ".join(unknown))
    return names


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.2f} ms"


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in FLAG_COLUMNS})


def _wait_flag(
    combined: pd.DataFrame, flag: str, severity: Callable[[pd.DataFrame], np.ndarray],
    note: str = "",
) -> pd.DataFrame:
    """The rows of a wait flag from its merged partials (:func:`combine_worst`)."""
    if combined.empty:
        return _empty()
    worst = combined.assign(duration_ms=combined["duration_ns"].to_numpy(dtype="float64")
                            / NS_PER_MS)
    count = worst["count"].to_numpy()
    total = worst["total_ns"].to_numpy(dtype="float64") / NS_PER_MS
    still = worst["still"].to_numpy()
    ongoing = still > 0
    evidence = [
        f"{n} wait{'s' if n != 1 else ''}{note}{f' ({k} still waiting at the end)' if k else ''},"
        f" worst {_ms(d)} at {t:.1f}s: {s}"
        for n, k, d, t, s in zip(count, still, worst["duration_ms"], worst["t_s"], worst["stack"])
    ]
    out = pd.DataFrame({
        "flag": flag,
        "severity": severity(worst.assign(ongoing=ongoing)),
        "host": worst["host"].astype(object),
        "path": worst["path"].astype(object),
        "pid": worst["pid"].astype("Int64"),
        "tgid": worst["tgid"].astype("Int64"),
        "comm": worst["comm"].astype(object),
        "mount": worst["mount"].astype(object),
        "bdi": worst["bdi"].astype(object),
        "ino": worst["ino"].astype("Int64"),
        "duration_ms": worst["duration_ms"].astype("float64"),
        "ongoing": ongoing,
        "count": count.astype(np.int64),
        "total_ms": total.astype("float64"),
        "evidence": evidence,
        "mechanism": FLAG_KINDS[flag].mechanism,
    })
    return out


def _severity_by_duration(threshold_ms: float) -> Callable[[pd.DataFrame], np.ndarray]:
    def severity(worst: pd.DataFrame) -> np.ndarray:
        return np.select(
            [worst["ongoing"].to_numpy(dtype=bool),
             worst["duration_ms"].to_numpy() >= high_severity_ms(threshold_ms)],
            ["critical", "high"], "medium",
        )

    return severity


def _fixed(level: str) -> Callable[[pd.DataFrame], np.ndarray]:
    def severity(worst: pd.DataFrame) -> np.ndarray:
        return np.where(worst["ongoing"].to_numpy(dtype=bool), "critical", level)

    return severity


def answered_partial(r: pd.DataFrame) -> pd.DataFrame:
    """host, bdi, end_tgid of the server threads that answered requests of a slice of
    :func:`fuse_requests` rows (merge with :func:`server_tgids`)."""
    if r.empty:
        return pd.DataFrame(columns=["host", "bdi", "end_tgid"])
    # requests ended by an abort or a dead connection end in the aborter's context
    answered = ~r["error"].isin(KERNEL_ENDED_ERRORS)
    return r.loc[answered, ["host", "bdi", "end_tgid"]].dropna().drop_duplicates()


def server_tgids(cap: Capture, answered: list[pd.DataFrame]) -> set[tuple[str, str, int]]:
    """``(host, bdi, tgid)`` of every FUSE server thread: from meta and from the
    :func:`answered_partial` frames of the requests."""
    bdi_of_connection = {
        (r.host, int(r.connection)): str(r.bdi)
        for r in cap.mounts().itertuples(index=False)
        if r.connection is not None and r.bdi is not None
    }
    found: set[tuple[str, str, int]] = set()
    for src in cap.sources:
        for thread in src.meta.get("server_threads") or []:
            if not isinstance(thread, dict) or thread.get("tgid") is None:
                continue
            bdi = thread.get("bdi")
            if bdi is None and thread.get("connection") is not None:
                bdi = bdi_of_connection.get((src.host, int(thread["connection"])))
            if bdi is not None:
                found.add((src.host, str(bdi), int(thread["tgid"])))
    for replies in answered:
        found.update(
            (str(h), str(b), int(t))
            for h, b, t in zip(replies["host"], replies["bdi"], replies["end_tgid"])
        )
    return found


def unseen_fuse_waits(cap: Capture) -> pd.DataFrame:
    """Waits begun before tracing (from /proc) with a FUSE frame, shaped like ``waits``; their
    bdi and mount are unknown (None). The wait flags count them after every traced wait."""
    unseen = unseen_waits(cap)
    unseen = unseen[unseen["fuse"]]
    return pd.DataFrame({
        "host": unseen["host"].astype(object), "path": unseen["path"].astype(object),
        "bdi": None, "mount": None, "pid": unseen["pid"], "tgid": unseen["tgid"],
        "comm": unseen["comm"], "ino": pd.array([None] * len(unseen), dtype="Int64"),
        "duration_ms": unseen["duration_ms"].fillna(0.0),
        "duration_ns": [_unseen_ns(cap, str(h)) for h in unseen["host"].astype(object)],
        "ongoing": True, "t_s": 0.0,
        "stack": "asleep since before tracing began (bdi unknown, from /proc): "
        + unseen["stack"].astype(str),
    })


def _unseen_ns(cap: Capture, host: str) -> int:
    src = cap.source(host)
    return src.end_ns - src.start_ns if src.end_ns else 0


_WAIT_CARRY = ["tgid", "comm", "mount", "t_s", "stack"]


def _server_mask(w: pd.DataFrame, servers: set[tuple[str, str, int]]) -> np.ndarray:
    """Waits by a thread of the FUSE server of their bdi (any bdi of the host if unknown)."""
    mask = np.zeros(len(w), dtype=bool)
    if not servers or w.empty:
        return mask
    candidates = w["tgid"].isin({t for _, _, t in servers}).to_numpy(dtype=bool)
    chosen = w.loc[candidates]
    keys = zip(chosen["host"].astype(object), chosen["bdi"].astype(object), chosen["tgid"])
    server_anywhere = {(h, t) for h, _, t in servers}  # for waits whose bdi is unknown
    mask[candidates] = np.array([(str(h), str(b), int(t)) in servers
                                 or (pd.isna(b) and (str(h), int(t)) in server_anywhere)
                                 for h, b, t in keys], dtype=bool)
    return mask


def wait_flag_partials(w: pd.DataFrame, threshold_ms: float,
                       servers: set[tuple[str, str, int]]) -> dict[str, pd.DataFrame]:
    """Partials of every wait flag from a slice of :func:`waits` rows (or of
    :func:`unseen_fuse_waits`) with order columns; merge each with :func:`combine_worst`."""
    w = w[list(dict.fromkeys([*_WAIT_KEYS, *_WAIT_CARRY, *ORDER, "duration_ns", "duration_ms",
                              "ongoing"]))]

    def part(mask: np.ndarray) -> pd.DataFrame:
        return worst_partial(w[mask], _WAIT_KEYS, _WAIT_CARRY)

    out = {"BLOCKED_WAIT": part((w["duration_ms"] >= threshold_ms).to_numpy(dtype=bool))}
    for flag, path in _PATH_FLAGS.items():
        out[flag] = part((w["path"] == path).to_numpy(dtype=bool))
    out["SERVER_SELF_WAIT"] = part(_server_mask(w, servers))
    return out


def combine_wait_flag(partials: list[pd.DataFrame]) -> pd.DataFrame:
    """One wait flag's :func:`wait_flag_partials` of every slice, merged."""
    return combine_worst(partials, _WAIT_KEYS)


def _wait_flags(merged: dict[str, pd.DataFrame], threshold_ms: float) -> list[pd.DataFrame]:
    out = [_wait_flag(merged["BLOCKED_WAIT"], "BLOCKED_WAIT",
                      _severity_by_duration(threshold_ms), f" >= {threshold_ms:g} ms")]
    for flag in _PATH_FLAGS:
        out.append(_wait_flag(merged[flag], flag, _fixed("high")))
    out.append(_wait_flag(merged["SERVER_SELF_WAIT"], "SERVER_SELF_WAIT", _fixed("critical"),
                          " by a thread of this mount's own FUSE server"))
    return out


_STALL_CARRY = ["unique", "len", "t_s", "comm", "pid", "tgid", "mount", "ongoing"]


def stall_partial(r: pd.DataFrame, threshold_ms: float) -> pd.DataFrame:
    """STALLED_REQUEST's partial of a slice of :func:`fuse_requests` rows with order columns
    (slow or unanswered WRITEs per host and bdi); merge with :func:`combine_worst`."""
    if r.empty:
        return worst_partial(r, ["host", "bdi"], _STALL_CARRY)
    slow = (r["duration_ms"] >= threshold_ms) | r["ongoing"].fillna(False).astype(bool)
    return worst_partial(r[(r["opcode_name"] == WRITE) & slow], ["host", "bdi"], _STALL_CARRY)


def combine_stalls(partials: list[pd.DataFrame]) -> pd.DataFrame:
    """The :func:`stall_partial` of every slice, merged."""
    return combine_worst(partials, ["host", "bdi"])


def _streamed_stalls(worst: pd.DataFrame, threshold_ms: float) -> pd.DataFrame:
    if worst.empty:
        return _empty()
    worst = worst.assign(duration_ms=worst["duration_ns"].to_numpy(dtype="float64") / NS_PER_MS)
    count = worst["count"].to_numpy()
    never = worst["still"].to_numpy()
    evidence = [
        f"{n} WRITE{'s' if n != 1 else ''} >= {threshold_ms:g} ms or unanswered"
        f" ({k} never completed); worst unique={u} len={ln} sent at {t:.1f}s by {c}[{p}], "
        f"{'unanswered after' if o else 'answered after'} {_ms(d)}"
        for n, k, u, ln, t, c, p, o, d in zip(
            count, never, worst["unique"], worst["len"], worst["t_s"], worst["comm"],
            worst["pid"], worst["ongoing"], worst["duration_ms"])
    ]
    return pd.DataFrame({
        "flag": "STALLED_REQUEST",
        "severity": np.where(never > 0, "critical",
                             np.where(worst["duration_ms"] >= high_severity_ms(threshold_ms),
                                      "high", "medium")),
        "host": worst["host"].astype(object), "path": None,
        "pid": worst["pid"].astype("Int64"), "tgid": worst["tgid"].astype("Int64"),
        "comm": worst["comm"].astype(object), "mount": worst["mount"].astype(object),
        "bdi": worst["bdi"].astype(object), "ino": pd.array([None] * len(worst), dtype="Int64"),
        "duration_ms": worst["duration_ms"].astype("float64"), "ongoing": never > 0,
        "count": count.astype(np.int64),
        "total_ms": worst["total_ns"].to_numpy(dtype="float64") / NS_PER_MS,
        "evidence": evidence, "mechanism": FLAG_KINDS["STALLED_REQUEST"].mechanism,
    })


def _stalled_requests(cap: Capture, threshold_ms: float, stalls: pd.DataFrame) -> pd.DataFrame:
    """Slow or unanswered WRITEs from the streamed rows (``stalls``: merged
    :func:`stall_partial`), corrected by the kernel's per-opcode maximum when the slowest
    WRITE's event was lost or only summed."""
    out = _streamed_stalls(stalls, threshold_ms)
    extra = []
    for src in cap.sources:
        counters = src.meta.get("counters") or {}
        if not isinstance(counters, dict):
            continue
        kernel_max = float(counters.get(f"requests.{WRITE}.max_ns", 0) or 0) / 1e6
        if kernel_max < threshold_ms:
            continue
        mine = out.index[out["host"] == src.host]
        if len(mine) and out.loc[mine, "duration_ms"].max() >= kernel_max:
            continue
        note = (f"the kernel counted {counters.get(f'requests.{WRITE}.count', '?')} WRITEs, the "
                f"slowest answered after {_ms(kernel_max)} (its event was lost or only summed)")
        if len(mine) == 1:
            at = mine[0]
            out.loc[at, "evidence"] = f"{out.loc[at, 'evidence']}; {note}"
            out.loc[at, "duration_ms"] = kernel_max
            if out.loc[at, "severity"] == "medium" and kernel_max >= high_severity_ms(threshold_ms):
                out.loc[at, "severity"] = "high"
            continue
        mounts = [m for m in src.meta.get("mounts") or [] if isinstance(m, dict)]
        only = mounts[0] if len(mounts) == 1 else {}
        extra.append({
            "flag": "STALLED_REQUEST",
            "severity": "high" if kernel_max >= high_severity_ms(threshold_ms) else "medium",
            "host": src.host, "path": None, "pid": None, "tgid": None, "comm": None,
            "mount": only.get("mountpoint"), "bdi": only.get("bdi"), "ino": None,
            "duration_ms": kernel_max, "ongoing": False, "count": 1, "total_ms": kernel_max,
            "evidence": note, "mechanism": FLAG_KINDS["STALLED_REQUEST"].mechanism,
        })
    if extra:
        added = pd.DataFrame(extra, columns=FLAG_COLUMNS)
        out = pd.concat([out, added], ignore_index=True) if len(out) else added
    return out


def _dirty_throttle(cap: Capture) -> pd.DataFrame:
    t = dirty_throttling(cap)
    if t.empty:
        return _empty()
    evidence = [
        f"{p} pauses in {e} balance_dirty_pages calls, {_ms(tot)} paused in total (max "
        f"{_ms(mx)}) between {a:.1f}s and {b:.1f}s; bdi dirty up to {wd} pages vs setpoint {ws}"
        f" (max_ratio {mr if mr is not None else '?'}%)"
        for p, e, tot, mx, a, b, wd, ws, mr in zip(
            t["pauses"], t["events"], t["pause_ms_total"], t["pause_ms_max"], t["first_s"],
            t["last_s"], t["wb_dirty_max"], t["wb_setpoint_max"], t["max_ratio"])
    ]
    total = t["pause_ms_total"].astype("float64")
    return pd.DataFrame({
        "flag": "DIRTY_THROTTLE",
        "severity": np.where(total >= 1000, "high", np.where(total >= 100, "medium", "low")),
        "host": t["host"].astype(object), "path": None,
        "pid": t["pid"].astype("Int64"), "tgid": t["tgid"].astype("Int64"),
        "comm": t["comm"].astype(object), "mount": t["mount"].astype(object),
        "bdi": t["bdi"].astype(object), "ino": pd.array([None] * len(t), dtype="Int64"),
        "duration_ms": total, "ongoing": False, "count": t["events"].astype(np.int64),
        "total_ms": total, "evidence": evidence,
        "mechanism": FLAG_KINDS["DIRTY_THROTTLE"].mechanism,
    })


def _throttled(cap: Capture) -> pd.DataFrame:
    vm = vm_events(cap)
    on_writeback = (vm["reason"].fillna(0).astype(np.int64) & VMSCAN_THROTTLE_WRITEBACK) > 0
    return vm[(vm["kind"] == "vmscan_throttled") & on_writeback]


def throttle_times(cap: Capture) -> dict[str, np.ndarray]:
    """host -> times of reclaim throttled on writeback (RECLAIM_THROTTLE checks the WRITEs in
    flight then, with :func:`inflight_partial`); empty without vm events."""
    if not cap.recorded("vm"):
        return {}
    throttled = _throttled(cap)
    return {str(host): rows["ts_ns"].to_numpy(dtype=np.int64)
            for host, rows in throttled.groupby("host", observed=True, sort=False)}


def inflight_writes_partial(r: pd.DataFrame, times: dict[str, np.ndarray]) -> pd.DataFrame:
    """RECLAIM_THROTTLE's partial of a slice of :func:`fuse_requests` rows with order columns:
    WRITEs sent and ended by each throttle time; merge with :func:`combine_inflight`."""
    return inflight_partial(r[r["opcode_name"] == WRITE] if len(r) else r, times)


def _reclaim_throttle(cap: Capture, inflight: dict[str, list[tuple[str, np.ndarray]]]
                      ) -> pd.DataFrame:
    throttled = _throttled(cap)
    if throttled.empty:
        return _empty()
    pieces = []
    for host, rows in throttled.groupby("host", observed=True, sort=False):
        best = np.zeros(len(rows), dtype=np.int64)
        best_bdi = np.full(len(rows), None, dtype=object)
        for bdi, level in inflight.get(str(host), []):
            better = level > best
            best = np.where(better, level, best)
            best_bdi = np.where(better, bdi, best_bdi)
        hit = rows.assign(inflight=best, bdi=best_bdi)[best > 0]
        if not hit.empty:
            pieces.append(hit)
    if not pieces:
        return _empty()
    hit = pd.concat(pieces, ignore_index=True)
    hit["delay_ms"] = hit["usec_delayed"].fillna(0).astype("float64") / 1000
    grouped = hit.groupby(["host", "pid", "bdi"], observed=True, sort=False)
    worst = hit.loc[grouped["delay_ms"].idxmax().to_numpy()].reset_index(drop=True)
    count = grouped.size().to_numpy()
    total = grouped["delay_ms"].sum().to_numpy(dtype="float64")
    peak = grouped["inflight"].max().to_numpy()
    mounts = cap.mount_of()
    evidence = [
        f"{n} reclaim throttle{'s' if n != 1 else ''} on WRITEBACK, {_ms(tt)} delayed, while up"
        f" to {pk} FUSE WRITEs were in flight on this bdi (first at {t:.1f}s; throttling is"
        f" node-wide, the task need not use this mount)"
        for n, tt, pk, t in zip(count, total, peak, grouped["t_s"].min())
    ]
    return pd.DataFrame({
        "flag": "RECLAIM_THROTTLE",
        "severity": np.where(total >= 1000, "high", "medium"),
        "host": worst["host"].astype(object), "path": "reclaim",
        "pid": worst["pid"].astype("Int64"), "tgid": worst["tgid"].astype("Int64"),
        "comm": worst["comm"].astype(object),
        "mount": [mounts.get((str(h), str(b)), "?") for h, b in zip(worst["host"], worst["bdi"])],
        "bdi": worst["bdi"].astype(object), "ino": pd.array([None] * len(worst), dtype="Int64"),
        "duration_ms": total, "ongoing": False, "count": count.astype(np.int64),
        "total_ms": total, "evidence": evidence,
        "mechanism": FLAG_KINDS["RECLAIM_THROTTLE"].mechanism,
    })


def _server_reclaim_throttle(throttled: pd.DataFrame, servers: set[tuple[str, str, int]]
                             ) -> pd.DataFrame:
    """RECLAIM_THROTTLE rows whose task is a thread of the FUSE server of that same bdi.

    From 6.16 reclaim skips folios under FUSE writeback instead of waiting on them, but it still
    throttles on writeback progress; a server whose own allocations are throttled while its
    WRITEs are in flight waits on writeback only it can end (the 2024 deadlock shape, slowed
    instead of hung)."""
    if throttled.empty:
        return _empty()
    keys = zip(throttled["host"].astype(object), throttled["bdi"].astype(object),
               throttled["tgid"].astype("Int64"))
    mine = np.array([not pd.isna(t) and (str(h), str(b), int(t)) in servers for h, b, t in keys],
                    dtype=bool)
    chosen = throttled[mine]
    if chosen.empty:
        return _empty()
    return chosen.assign(
        flag="SERVER_SELF_WAIT",
        severity=np.where(chosen["duration_ms"].to_numpy() >= 1000, "critical", "high"),
        evidence="the FUSE server itself was throttled in reclaim on writeback while its own "
        "WRITEs were in flight: " + chosen["evidence"].astype(str),
        mechanism=FLAG_KINDS["SERVER_SELF_WAIT"].mechanism,
    )


def _missing_rows(rows: dict[tuple[str, str], int], host: str, counted: object) -> list[str]:
    """Tables holding fewer rows than ``meta.json`` counts (a part went missing)."""
    if not isinstance(counted, dict):
        return []
    short = []
    for table, expected in counted.items():
        if table not in TABLES or not isinstance(expected, int) or expected <= 0:
            continue
        found = rows.get((host, table), 0)
        if found < expected:
            short.append(f"{table} has {found} of the {expected} rows meta.json counts")
    return short


def _skipped_parts(skipped: list[str], shown: int = 3) -> str:
    """``unreadable parts skipped: ...`` naming the first ``shown`` with what is wrong."""
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    parts = "part" if len(skipped) == 1 else "parts"
    return f"{len(skipped)} unreadable {parts} skipped: {'; '.join(skipped[:shown])}{more}"


def _dropped(src: CaptureSource) -> str | None:
    """What --max-size dropped of a capture and the window it leaves without whole data."""
    dropped = src.meta.get("dropped") or {}
    parts = sum((dropped.get("parts") or {}).values())
    if parts <= 0:
        return None
    rows = ", ".join(f"{t} {n}" for t, n in (dropped.get("rows") or {}).items() if n)
    size = sum((dropped.get("bytes") or {}).values())
    bound = src.meta.get("max_size_bytes")
    text = (f"--max-size {format_size(bound) if bound else '?'} dropped the {parts} oldest parts "
            f"({format_size(size)}; rows: {rows or 'none'})")
    until = dropped.get("until_monotonic_ns")
    if until is not None:
        text += f": data before +{(until - src.start_ns) / 1e9:.1f} s is not whole"
    return text


def _incomplete(cap: Capture, scan: Scan) -> pd.DataFrame:
    rows = []
    for src in cap.sources:
        lost = src.lost_total
        complete = bool(src.meta.get("complete", False))
        short = _missing_rows(scan.rows, src.host, src.meta.get("tables"))
        counters = src.meta.get("counters") or {}
        untracked = int(counters.get("pending_full", 0) or 0) if isinstance(counters, dict) else 0
        skipped = scan.damage.get(src.host, [])
        dropped = _dropped(src)
        early = src.meta.get("stopped_early")
        if lost <= 0 and complete and not short and untracked <= 0 and not skipped \
                and dropped is None and not early:
            continue
        parts = []
        if lost > 0:
            by_kind = (src.meta.get("lost_events") or {}).get("by_kind") or {}
            detail = ", ".join(f"{k} {v}" for k, v in by_kind.items() if v)
            parts.append(f"lost {lost} events" + (f" ({detail})" if detail else ""))
        if not complete:
            parts.append("the tracer did not stop cleanly (complete=false)")
        if early:
            parts.append(f"the tracer stopped early: {early}")
        if dropped is not None:
            parts.append(dropped)
        if short:
            parts.append("parts missing: " + ", ".join(short))
        if untracked > 0:
            parts.append(f"{untracked} waits or requests not tracked (tracer state maps full)")
        if skipped:
            parts.append(_skipped_parts(skipped))
        rows.append({
            "flag": "INCOMPLETE_CAPTURE",
            "severity": "high" if lost > 0 or short or untracked > 0 or skipped else "medium",
            "host": src.host, "path": None, "pid": None, "tgid": None, "comm": None,
            "mount": None, "bdi": None, "ino": None, "duration_ms": None, "ongoing": False,
            "count": max(lost, 1), "total_ms": None, "evidence": "; ".join(parts),
            "mechanism": FLAG_KINDS["INCOMPLETE_CAPTURE"].mechanism,
        })
    return pd.DataFrame(rows, columns=FLAG_COLUMNS) if rows else _empty()


def flags(cap: Capture, threshold_ms: float = THRESHOLD_MS, scan: Scan | None = None) -> pd.DataFrame:
    """Every flag raised by the capture, most severe and longest first.

    Columns: flag, severity (critical/high/medium/low), host, path (for wait flags and
    RECLAIM_THROTTLE, else None), pid, tgid, comm, mount, bdi, ino (waits only), duration_ms (the
    worst; total pause for DIRTY_THROTTLE, total delay for RECLAIM_THROTTLE), ongoing, count
    (events merged into the row), total_ms, evidence (stack summary or figures), mechanism.
    ``attrs["not_checked"]``: flag -> why it could not be checked on this capture. ``scan``:
    the merged partials of the big tables (:func:`fusewb.analysis.scan.scan`, by any engine;
    made with the pandas engine when not given).
    """
    if scan is None:
        from fusewb.analysis.scan import scan as run_scan  # noqa: PLC0415 (scan imports this)

        scan = run_scan(cap, threshold_ms)
    not_checked: dict[str, str] = {}

    def can(flag: str) -> bool:
        lacking = [n for n in FLAG_KINDS[flag].needs if not cap.recorded(n)]
        if lacking:
            not_checked[flag] = f"the capture has no {', '.join(lacking)} events"
        return not lacking

    pieces: list[pd.DataFrame] = []
    wait_flags = ["BLOCKED_WAIT", "RECLAIM_WAIT", "MIGRATION_WAIT", "SYNC_WAIT", "SERVER_SELF_WAIT"]
    if all([can(flag) for flag in wait_flags]):
        pieces.extend(_wait_flags(scan.wait_flags, threshold_ms))
    if can("STALLED_REQUEST"):
        pieces.append(_stalled_requests(cap, threshold_ms, scan.stalls))
    if can("DIRTY_THROTTLE"):
        pieces.append(_dirty_throttle(cap))
    if can("RECLAIM_THROTTLE"):
        throttled = _reclaim_throttle(cap, scan.inflight)
        pieces.append(throttled)
        if can("SERVER_SELF_WAIT"):
            pieces.append(_server_reclaim_throttle(throttled, scan.servers))
    pieces.append(_incomplete(cap, scan))
    pieces = [p for p in pieces if len(p)]
    if not pieces:
        out = _empty()
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
