"""Flags: the findings a kernel or storage engineer acts on, one row per (flag, task, file...).

:data:`FLAGS` declares every flag fusewb raises, each one :class:`~fusewb.analysis.rules.Flag`
(what it needs, the rows it selects, its severity, evidence and mechanism); the engine in
:mod:`fusewb.analysis.rules` runs them. The functions here select and describe the rows of
those flags; the scan's inputs beyond a flag's own rows (the FUSE server threads, waits begun
before tracing, WRITEs in flight when reclaim was throttled) are in
:mod:`fusewb.analysis.scanned`.

:func:`fusewb.analysis.flagging.flags` returns one DataFrame with the columns of
:data:`FLAG_COLUMNS`; rows of the same flag, host, path, bdi, task and inode are merged
(``count``, ``total_ms``; ``duration_ms`` and the evidence are the worst one's). Flags whose
events the capture lacks are listed in ``frame.attrs["not_checked"]`` (flag -> reason) instead
of failing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture, CaptureSource
from fusewb.analysis.histograms import bdi_of_connection, row_thresholds
from fusewb.analysis.paths import PATH_MECHANISMS
from fusewb.analysis.requests import WRITE
from fusewb.analysis.rules import (
    FLAG_COLUMNS,
    Also,
    SEVERITIES,
    Flag,
    Rule,
    Select,
    by_duration,
    by_total,
    fixed,
)
from fusewb.analysis.scanned import Scan, throttled_on_writeback
from fusewb.analysis.vm import dirty_throttling
from fusewb.contract.defaults import (
    HIGH_SEVERITY_MS,
    MEDIUM_THROTTLE_MS,
    high_severity_ms,
)
from fusewb.contract.meta import MISSED_TOTAL, missed_text
from fusewb.contract.schema import TABLES
from fusewb.contract.units import NS_PER_MS, format_size

__all__ = [
    "FLAGS",
    "FLAG_KINDS",
    "FLAG_NAMES",
    "FLAG_COLUMNS",
    "SEVERITIES",
    "parse_flag_names",
]


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.2f} ms"


def _s(n: int) -> str:
    return "s" if n != 1 else ""


# --- waits ----------------------------------------------------------------------------------

_WAIT_KEYS = ("host", "path", "bdi", "pid", "ino")
_WAIT_CARRY = ("tgid", "comm", "mount", "t_s", "stack")


def _wait_evidence(note: str = "") -> Rule:
    def evidence(rows: pd.DataFrame, threshold_ms: float) -> list[str]:
        note_ = note.format(threshold_ms=threshold_ms)
        return [
            f"{n} wait{_s(n)}{note_}{f' ({k} still waiting at the end)' if k else ''},"
            f" worst {_ms(d)} at {t:.1f}s: {s}"
            for n, k, d, t, s in zip(rows["count"], rows["still"], rows["duration_ms"],
                                     rows["t_s"], rows["stack"])
        ]

    return evidence


def _on_path(path: str) -> Select:
    def select(w: pd.DataFrame, threshold_ms: float, servers: set[tuple[str, str, int]]
               ) -> np.ndarray:
        return (w["path"] == path).to_numpy(dtype=bool)

    return select


def _server_mask(w: pd.DataFrame, threshold_ms: float, servers: set[tuple[str, str, int]]
                 ) -> np.ndarray:
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


def _wait_flag(*, name: str, raised_when: str, mechanism: str, select: Select, severity: Rule,
               note: str = "", also: Also | None = None) -> Flag:
    """A flag on the waits table: rows merged per host, path, bdi, task and inode."""
    return Flag(name=name, raised_when=raised_when, needs=("waits",), mechanism=mechanism,
                severity=severity, evidence=_wait_evidence(note), table="waits", select=select,
                keys=_WAIT_KEYS, carry=_WAIT_CARRY, also=also)


def _path_flag(name: str, inside: str, path: str) -> Flag:
    """A high flag for any wait on ``path``; its mechanism is the path's (analysis/paths.py)."""
    return _wait_flag(name=name, raised_when=f"any wait on FUSE writeback inside {inside}",
                      mechanism=PATH_MECHANISMS[path], select=_on_path(path),
                      severity=fixed("high"))


# --- requests -------------------------------------------------------------------------------

def _stalled(r: pd.DataFrame, threshold_ms: float, servers: set[tuple[str, str, int]]
             ) -> np.ndarray:
    slow = (r["duration_ms"] >= threshold_ms) | r["ongoing"].fillna(False).astype(bool)
    return ((r["opcode_name"] == WRITE) & slow).to_numpy(dtype=bool)


def _stall_evidence(rows: pd.DataFrame, threshold_ms: float) -> list[str]:
    return [
        f"{n} WRITE{_s(n)} >= {threshold_ms:g} ms or unanswered"
        f" ({k} never completed); worst unique={u} len={ln} sent at {t:.1f}s by {c}[{p}], "
        f"{'unanswered after' if o else 'answered after'} {_ms(d)}"
        for n, k, u, ln, t, c, p, o, d in zip(
            rows["count"], rows["still"], rows["unique"], rows["len"], rows["t_s"],
            rows["comm"], rows["pid"], rows["ongoing"], rows["duration_ms"])
    ]


@dataclass(frozen=True)
class _Slowest:
    """The WRITEs of a host as the kernel counted them: how many, the slowest, and its bdi
    (None when only known per host) and why it may have no row."""

    count: int
    max_ms: float
    bdi: str | None
    why: str


def _slowest_write(src: CaptureSource) -> _Slowest | None:
    """The kernel's count and maximum of ``src``'s WRITEs: from the histograms, or from the
    per-opcode counters of captures written before them; None when it has neither."""
    thresholds = row_thresholds(src)
    if thresholds is not None:
        entries = [e for e in src.meta["histograms"].get("requests") or []
                   if e.get("opcode_name") == WRITE and e.get("count")]
        if not entries:
            return None
        worst = max(entries, key=lambda e: int(e.get("max_ns") or 0))
        connection = int(worst.get("connection") or 0)
        return _Slowest(sum(int(e["count"]) for e in entries), int(worst.get("max_ns") or 0)
                        / NS_PER_MS, str(worst.get("bdi") or bdi_of_connection(connection)),
                        f"no row: under the capture's row threshold of "
                        f"{thresholds['requests']:g} ms, or its event was lost")
    counters = src.meta.get("counters") or {}
    if not isinstance(counters, dict) or f"requests.{WRITE}.max_ns" not in counters:
        return None
    return _Slowest(int(counters.get(f"requests.{WRITE}.count", 0) or 0),
                    float(counters[f"requests.{WRITE}.max_ns"] or 0) / NS_PER_MS, None,
                    "its event was lost or only summed")


def _kernel_max(cap: Capture, out: pd.DataFrame, threshold_ms: float) -> pd.DataFrame:
    """STALLED_REQUEST corrected by the kernel's maximum of the WRITEs (histograms, or the
    per-opcode counters before them) when the slowest WRITE has no row."""
    extra = []
    high = high_severity_ms(threshold_ms)
    mounts = cap.mount_of()
    for src in cap.sources:
        slowest = _slowest_write(src)
        if slowest is None or slowest.max_ms < threshold_ms:
            continue
        kernel_max = slowest.max_ms
        mine = out.index[out["host"] == src.host]
        if len(mine) and out.loc[mine, "duration_ms"].max() >= kernel_max:
            continue
        note = (f"the kernel counted {slowest.count} WRITEs, the slowest answered after "
                f"{_ms(kernel_max)} ({slowest.why})")
        if len(mine) == 1:
            at = mine[0]
            out.loc[at, "evidence"] = f"{out.loc[at, 'evidence']}; {note}"
            out.loc[at, "duration_ms"] = kernel_max
            if out.loc[at, "severity"] == "medium" and kernel_max >= high:
                out.loc[at, "severity"] = "high"
            continue
        bdi, mount = slowest.bdi, mounts.get((src.host, str(slowest.bdi)))
        if bdi is None:
            listed = [m for m in src.meta.get("mounts") or [] if isinstance(m, dict)]
            only = listed[0] if len(listed) == 1 else {}
            bdi, mount = only.get("bdi"), only.get("mountpoint")
        extra.append({
            "flag": "STALLED_REQUEST", "severity": "high" if kernel_max >= high else "medium",
            "host": src.host, "path": None, "pid": None, "tgid": None, "comm": None,
            "mount": mount, "bdi": bdi, "ino": None,
            "duration_ms": kernel_max, "ongoing": False, "count": 1, "total_ms": kernel_max,
            "evidence": note, "mechanism": FLAG_KINDS["STALLED_REQUEST"].mechanism,
        })
    if extra:
        added = pd.DataFrame(extra, columns=FLAG_COLUMNS)
        out = pd.concat([out, added], ignore_index=True) if len(out) else added
    return out


# --- throttling -----------------------------------------------------------------------------

def _dirty_rows(cap: Capture, scan: Scan, threshold_ms: float) -> pd.DataFrame:
    """Writers balance_dirty_pages paused (calls that returned without a pause are not)."""
    t = dirty_throttling(cap)
    t = t[t["pauses"] > 0]
    total = t["pause_ms_total"].astype("float64")
    return t.assign(duration_ms=total, total_ms=total, count=t["events"].astype(np.int64),
                    ongoing=False)


def _dirty_evidence(t: pd.DataFrame, threshold_ms: float) -> list[str]:
    return [
        f"{p} pauses in {e} balance_dirty_pages calls, {_ms(tot)} paused in total (max "
        f"{_ms(mx)}) between {a:.1f}s and {b:.1f}s; bdi dirty up to {wd} pages vs setpoint {ws}"
        f" (max_ratio {mr if mr is not None else '?'}%)"
        for p, e, tot, mx, a, b, wd, ws, mr in zip(
            t["pauses"], t["events"], t["pause_ms_total"], t["pause_ms_max"], t["first_s"],
            t["last_s"], t["wb_dirty_max"], t["wb_setpoint_max"], t["max_ratio"])
    ]


def _reclaim_throttle_rows(cap: Capture, scan: Scan, threshold_ms: float) -> pd.DataFrame:
    """Reclaim throttles on writeback while FUSE WRITEs were in flight, per host, task and the
    bdi with the most WRITEs in flight then."""
    throttled = throttled_on_writeback(cap)
    pieces = []
    for host, rows in throttled.groupby("host", observed=True, sort=False):
        best = np.zeros(len(rows), dtype=np.int64)
        best_bdi = np.full(len(rows), None, dtype=object)
        for bdi, level in scan.inflight.get(str(host), []):
            better = level > best
            best = np.where(better, level, best)
            best_bdi = np.where(better, bdi, best_bdi)
        hit = rows.assign(inflight=best, bdi=best_bdi)[best > 0]
        if not hit.empty:
            pieces.append(hit)
    if not pieces:
        return pd.DataFrame()
    hit = pd.concat(pieces, ignore_index=True)
    hit["delay_ms"] = hit["usec_delayed"].fillna(0).astype("float64") / 1000
    grouped = hit.groupby(["host", "pid", "bdi"], observed=True, sort=False)
    worst = hit.loc[grouped["delay_ms"].idxmax().to_numpy()].reset_index(drop=True)
    total = grouped["delay_ms"].sum().to_numpy(dtype="float64")
    mounts = cap.mount_of()
    return pd.DataFrame({
        "host": worst["host"].astype(object), "path": "reclaim", "pid": worst["pid"],
        "tgid": worst["tgid"], "comm": worst["comm"].astype(object),
        "mount": [mounts.get((str(h), str(b)), "?") for h, b in zip(worst["host"], worst["bdi"])],
        "bdi": worst["bdi"].astype(object), "duration_ms": total, "total_ms": total,
        "count": grouped.size().to_numpy().astype(np.int64), "ongoing": False,
        "peak": grouped["inflight"].max().to_numpy(), "first_s": grouped["t_s"].min().to_numpy(),
        "rows_from": [_request_rows_from(cap, str(h)) for h in worst["host"].astype(object)],
    })


def _request_rows_from(cap: Capture, host: str) -> str:
    """`` of N ms or more`` when ``host``'s requests have rows only from N ms on, else ""."""
    thresholds = row_thresholds(cap.source(host))
    if thresholds is None or thresholds["requests"] <= 0:
        return ""
    return f" of {thresholds['requests']:g} ms or more"


def _reclaim_throttle_evidence(rows: pd.DataFrame, threshold_ms: float) -> list[str]:
    return [
        f"{n} reclaim throttle{_s(n)} on WRITEBACK, {_ms(tt)} delayed, while up"
        f" to {pk} FUSE WRITEs{rf} were in flight on this bdi (first at {t:.1f}s; throttling is"
        f" node-wide, the task need not use this mount)"
        for n, tt, pk, t, rf in zip(rows["count"], rows["total_ms"], rows["peak"],
                                    rows["first_s"], rows["rows_from"])
    ]


def _server_throttled(cap: Capture, scan: Scan, throttled: pd.DataFrame) -> pd.DataFrame:
    """RECLAIM_THROTTLE rows whose task is a thread of the FUSE server of that same bdi.

    From 6.16 reclaim skips folios under FUSE writeback instead of waiting on them, but it still
    throttles on writeback progress; a server whose own allocations are throttled while its
    WRITEs are in flight waits on writeback only it can end (the 2024 deadlock shape, slowed
    instead of hung)."""
    keys = zip(throttled["host"].astype(object), throttled["bdi"].astype(object),
               throttled["tgid"].astype("Int64"))
    mine = np.array([not pd.isna(t) and (str(h), str(b), int(t)) in scan.servers
                     for h, b, t in keys], dtype=bool)
    return throttled[mine]


# --- the capture itself ---------------------------------------------------------------------

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


def _missed_runs(counters: dict, missed: int) -> str:
    """The kernel's count of probe runs it skipped."""
    return (f"the kernel skipped {missed} runs of fusewb's probes ({missed_text(counters)}): a "
            "BPF program was already running on that CPU when the probe fired (the kernel's "
            "recursion guard), so those events are in neither rows nor histograms")


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


def _incomplete_rows(cap: Capture, scan: Scan, threshold_ms: float) -> pd.DataFrame:
    """One row per host whose capture is not whole: ``what`` is wrong, ``serious`` when events
    or rows are missing (else only the tracer's stop was unclean or early, or --max-size)."""
    rows = []
    for src in cap.sources:
        lost = src.lost_total
        complete = bool(src.meta.get("complete", False))
        short = _missing_rows(scan.rows, src.host, src.meta.get("tables"))
        counters = src.meta.get("counters") or {}
        untracked = int(counters.get("pending_full", 0) or 0) if isinstance(counters, dict) else 0
        uncounted = int(counters.get("hist_full", 0) or 0) if isinstance(counters, dict) else 0
        missed = int(counters.get(MISSED_TOTAL, 0) or 0) if isinstance(counters, dict) else 0
        skipped = scan.damage.get(src.host, [])
        dropped = _dropped(src)
        early = src.meta.get("stopped_early")
        if lost <= 0 and complete and not short and untracked <= 0 and uncounted <= 0 \
                and missed <= 0 and not skipped and dropped is None and not early:
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
        if uncounted > 0:
            parts.append(f"{uncounted} ended waits or requests not counted in the histograms "
                         "(histogram maps full)")
        if missed > 0:
            parts.append(_missed_runs(counters, missed))
        if skipped:
            parts.append(_skipped_parts(skipped))
        rows.append({"host": src.host, "count": max(lost, 1), "ongoing": False,
                     "what": "; ".join(parts),
                     "serious": bool(lost > 0 or short or untracked > 0 or uncounted > 0
                                     or missed > 0 or skipped)})
    return pd.DataFrame(rows)


# --- the declarations -----------------------------------------------------------------------

FLAGS: list[Flag] = [
    _wait_flag(
        name="BLOCKED_WAIT",
        raised_when="a wait on FUSE writeback at or over the threshold",
        mechanism="the task sleeps until the FUSE server answers a WRITE (folio_wait_writeback on "
        "the folio it covers; before 6.16 fuse.ko's waits for the inode's in-flight WRITEs, or "
        "for a request the server reads only after them), so the server's latency becomes this "
        "task's latency",
        select=lambda w, threshold_ms, servers: (w["duration_ms"] >= threshold_ms).to_numpy(
            dtype=bool),
        severity=by_duration, note=" >= {threshold_ms:g} ms",
    ),
    _path_flag("RECLAIM_WAIT", "memory reclaim", "reclaim"),
    _path_flag("MIGRATION_WAIT", "migration or compaction", "migration"),
    _path_flag("SYNC_WAIT", "sync(2)/syncfs(2)", "sync"),
    _wait_flag(
        name="SERVER_SELF_WAIT",
        raised_when="the waiter (on FUSE writeback, or throttled in reclaim on writeback while "
        "WRITEs were in flight) is a thread of the FUSE server of that connection",
        mechanism="the server sleeps on writeback that only its own replies can end: when the "
        "thread that must answer the WRITE is the one waiting, the connection deadlocks",
        select=_server_mask, severity=fixed("critical"),
        note=" by a thread of this mount's own FUSE server",
        also=Also(
            derived_from="RECLAIM_THROTTLE", rows=_server_throttled,
            severity=by_total((HIGH_SEVERITY_MS, "critical"), below="high"),
            evidence=lambda rows, threshold_ms: "the FUSE server itself was throttled in "
            "reclaim on writeback while its own WRITEs were in flight: "
            + rows["evidence"].astype(str),
        ),
    ),
    Flag(
        name="STALLED_REQUEST",
        raised_when="a FUSE WRITE outstanding over the threshold or never completed",
        needs=("requests",),
        mechanism="folios stay under writeback until the server replies to their WRITE (6.16+: "
        "no temp-page copy), so a held request keeps every waiter on those folios asleep; "
        "6.15+ request timeouts can bound it",
        severity=by_duration, evidence=_stall_evidence, table="requests", select=_stalled,
        keys=("host", "bdi"),
        carry=("unique", "len", "t_s", "comm", "pid", "tgid", "mount", "ongoing"),
        amend=_kernel_max,
    ),
    Flag(
        name="DIRTY_THROTTLE",
        raised_when="balance_dirty_pages paused a writer on a FUSE bdi",
        needs=("throttle",),
        mechanism="a FUSE bdi gets max_ratio 1% of the dirty limit, so balance_dirty_pages "
        "pauses writers early to keep its dirty + writeback pages under that share",
        severity=by_total((HIGH_SEVERITY_MS, "high"), (MEDIUM_THROTTLE_MS, "medium"),
                          below="low"),
        evidence=_dirty_evidence, rows=_dirty_rows,
    ),
    Flag(
        name="RECLAIM_THROTTLE",
        raised_when="reclaim throttled on writeback while FUSE WRITEs were in flight",
        needs=("vm:vmscan_throttled", "requests"),
        mechanism="reclaim met folios under writeback and slept in reclaim_throttle(WRITEBACK) "
        "for writeback progress, which in-flight FUSE WRITEs make only at the server's pace",
        severity=by_total((HIGH_SEVERITY_MS, "high"), below="medium"),
        evidence=_reclaim_throttle_evidence, rows=_reclaim_throttle_rows,
    ),
    Flag(
        name="INCOMPLETE_CAPTURE",
        raised_when="lost events, a tracer that did not stop cleanly or stopped early, parts "
        "missing, unreadable or dropped by --max-size, or full maps (tracer state or "
        "histograms)",
        needs=(),
        mechanism="the ring buffer dropped events, the tracer did not flush at exit or parts of "
        "the capture were lost, damaged or dropped to keep it within --max-size: counts are "
        "lower bounds and ongoing waits may be missing",
        severity=lambda rows, threshold_ms: np.where(rows["serious"].to_numpy(dtype=bool),
                                                     "high", "medium"),
        evidence=lambda rows, threshold_ms: rows["what"], rows=_incomplete_rows,
    ),
]


FLAG_KINDS: dict[str, Flag] = {flag.name: flag for flag in FLAGS}
FLAG_NAMES: list[str] = list(FLAG_KINDS)


def parse_flag_names(text: str | None) -> list[str]:
    """``"BLOCKED_WAIT,sync_wait"`` -> names; raises ValueError naming unknown ones."""
    if not text:
        return []
    names = [part.strip().upper() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in FLAG_KINDS]
    if unknown:
        raise ValueError(", ".join(unknown))
    return names
