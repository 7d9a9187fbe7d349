"""Questions about FUSE requests: each one, per opcode, and in-flight WRITEs over time.

Captures with in-kernel histograms (schema_version 2, :mod:`fusewb.analysis.histograms`) have
rows only for requests from ``row_threshold_ms`` on and those unanswered at the end: the counts,
sums, maxima and percentiles per opcode come from the histograms, which count every one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture
from fusewb.analysis.histograms import (
    KernelCounts,
    Tally,
    bdi_of_connection,
    kernel_counts,
)
from fusewb.analysis.partials import (
    combine_stats,
    end_times,
    stats_partial,
    with_order,
)
from fusewb.analysis.common import (
    mount_column,
    requires,
    seconds_since_start,
)
from fusewb.contract.units import NS_PER_MS

__all__ = [
    "fuse_requests",
    "requests_by_opcode",
    "request_totals",
    "inflight_writeback",
    "derive_requests",
    "REQUEST_COLUMNS",
    "by_opcode_partial",
    "combine_by_opcode",
    "request_counts",
    "WRITE",
    "LAST_NS",
    "MAX_BINS",
]

WRITE = "WRITE"
LAST_NS = 1 << 62  # past any monotonic clock (146 years): corrupt times are clipped to it
MAX_BINS = 1_000_000  # inflight_writeback widens its bins rather than make more


REQUEST_COLUMNS = ["host", "t_s", "send_ts_ns", "end_ts_ns", "duration_ns", "duration_ms",
                   "ongoing", "connection", "bdi", "mount", "unique", "opcode", "opcode_name",
                   "len", "error", "pid", "tgid", "comm", "end_pid", "end_tgid", "end_comm"]


def derive_requests(cap: Capture, raw: pd.DataFrame) -> pd.DataFrame:
    """Rows of the requests table (all or some) with the columns of :func:`fuse_requests`
    derived, in their order (those ``raw`` lacks left out, its extra columns kept at the end)."""
    frame = raw.copy(deep=False)  # copy on write: new columns only, raw stays as it is
    frame["duration_ms"] = frame["duration_ns"].astype("float64") / NS_PER_MS
    frame["t_s"] = seconds_since_start(cap, frame, "send_ts_ns")
    frame["mount"] = mount_column(cap, frame)
    extra = [c for c in frame.columns if c not in REQUEST_COLUMNS]
    return frame[[c for c in REQUEST_COLUMNS if c in frame.columns] + extra]


@requires("requests")
def fuse_requests(cap: Capture) -> pd.DataFrame:
    """Every FUSE request, send joined with end.

    Columns: host, t_s, send_ts_ns, end_ts_ns, duration_ns, duration_ms, ongoing, connection,
    bdi, mount, unique, opcode, opcode_name, len, error, pid, tgid, comm, end_pid, end_tgid,
    end_comm. Sorted by host and send time.
    """

    def build() -> pd.DataFrame:
        frame = derive_requests(cap, cap.table("requests"))
        return frame.sort_values(["host", "send_ts_ns"], kind="stable").reset_index(drop=True)

    return cap.derived("requests", build)


_OPCODE_KEYS = ["host", "connection", "bdi", "mount", "opcode_name"]
_OPCODE_SUMS = {"errors": "failed", "bytes": "len"}
_OPCODE_COLUMNS = ["host", "connection", "bdi", "mount", "opcode_name", "count", "rows", "ongoing",
                   "errors", "bytes", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms",
                   "total_ms", "percentile_error_pct"]


def request_counts(cap: Capture) -> KernelCounts:
    """The request histograms of ``cap``'s hosts that have them, per host, connection, bdi,
    mount and opcode (:data:`_OPCODE_KEYS`), with their errors and bytes."""
    mounts = cap.mount_of()

    def key_of(host: str, entry: dict) -> tuple:
        connection = int(entry.get("connection") or 0)
        bdi = str(entry.get("bdi") or bdi_of_connection(connection))
        return (host, connection, bdi, mounts.get((host, bdi), "?"),
                str(entry.get("opcode_name") or entry.get("opcode")))

    return kernel_counts(cap, "requests", key_of, sums=list(_OPCODE_SUMS))


def by_opcode_partial(r: pd.DataFrame) -> pd.DataFrame:
    """:func:`requests_by_opcode` of a slice of :func:`fuse_requests` rows with order columns,
    to merge with :func:`combine_by_opcode`."""
    failed = r["error"].fillna(0).ne(0) if len(r) else pd.Series(dtype=bool)
    return stats_partial(r.assign(failed=failed), _OPCODE_KEYS, sums=_OPCODE_SUMS)


def combine_by_opcode(cap: Capture, partials: list[pd.DataFrame]) -> pd.DataFrame:
    """:func:`requests_by_opcode` from the partials of every slice of the requests and the
    capture's histograms."""
    out = combine_stats(partials, _OPCODE_KEYS, sums=list(_OPCODE_SUMS),
                        kernel=request_counts(cap))
    if out.empty:
        return pd.DataFrame(columns=_OPCODE_COLUMNS)
    out = out.sort_values("total_ms", ascending=False, kind="stable")
    return out[_OPCODE_COLUMNS].reset_index(drop=True)


@requires("requests")
def requests_by_opcode(cap: Capture) -> pd.DataFrame:
    """FUSE requests per host, connection (bdi, mount) and opcode, most time first.

    Columns: host, connection, bdi, mount, opcode_name, count (every request: those the kernel
    counted in its histograms plus the rows unanswered at the end; captures without histograms:
    the rows), rows (rows of the requests table), ongoing (rows unanswered at the end), errors
    (replies with error != 0), bytes (sum of len), mean_ms, p50_ms, p90_ms, p99_ms (from the
    histograms' buckets, within percentile_error_pct of the true value; exact without histograms),
    max_ms (exact), total_ms, percentile_error_pct (in percent; 0 when exact). Unanswered requests
    count with the time they waited so far.
    """
    whole = with_order(fuse_requests(cap), cap.hosts, "send_ts_ns")
    return combine_by_opcode(cap, [by_opcode_partial(whole)])


_TOTAL_COLUMNS = ["host", "opcode_name", "count", "errors", "total_ms", "mean_ms", "max_ms",
                  "rows", "counted_only"]


def _counter_totals(counters: dict) -> dict[str, dict[str, float]]:
    """opcode -> count, errors, total_ns, max_ns from a capture's counters (schema_version 1)."""
    opcodes = sorted({key.split(".")[1] for key in counters
                      if key.startswith("requests.") and key.count(".") == 2})
    return {op: {stat: counters.get(f"requests.{op}.{stat}", 0)
                 for stat in ("count", "errors", "total_ns", "max_ns")} for op in opcodes}


def _histogram_totals(counts: KernelCounts, host: str) -> dict[str, dict[str, float]]:
    """opcode -> count, errors, total_ns, max_ns of ``host``'s request histograms."""
    merged: dict[str, Tally] = {}
    for key, tally in counts.groups.items():
        if key[0] == host:
            merged.setdefault(key[-1], Tally())
            merged[key[-1]] += tally
    return {op: {"count": t.hist.count, "errors": t.sums.get("errors", 0),
                 "total_ns": t.hist.total_ns, "max_ns": t.hist.max_ns}
            for op, t in sorted(merged.items())}


@requires("requests")
def request_totals(cap: Capture, by_opcode: pd.DataFrame | None = None) -> pd.DataFrame:
    """Completed FUSE requests per host and opcode as counted in the kernel (its histograms;
    in captures written before them, its per-opcode counters), next to how many are rows
    (``by_opcode``: :func:`requests_by_opcode`, computed when not given).

    Columns: host, opcode_name, count, errors, total_ms, mean_ms, max_ms, rows (completed
    requests with a row in the requests table), counted_only (counted in the kernel, no row:
    faster than the row threshold, or past the event budget of captures before histograms).
    Empty without histograms or counters.
    """
    by_opcode = requests_by_opcode(cap) if by_opcode is None else by_opcode
    done = by_opcode.assign(done=by_opcode["rows"] - by_opcode["ongoing"]).astype(
        {"host": object, "opcode_name": object})
    with_rows = done.groupby(["host", "opcode_name"])["done"].sum()
    counts = request_counts(cap)
    rows = []
    for src in cap.sources:
        if src.host in counts.hosts:
            totals = _histogram_totals(counts, src.host)
        else:
            totals = _counter_totals(src.meta.get("counters") or {})
        for op, stats in totals.items():
            count, total = int(stats["count"]), stats["total_ns"] / NS_PER_MS
            rows.append({
                "host": src.host, "opcode_name": op, "count": count,
                "errors": int(stats["errors"]), "total_ms": total,
                "mean_ms": total / count if count else float("nan"),
                "max_ms": stats["max_ns"] / NS_PER_MS,
                "rows": int(with_rows.get((src.host, op), 0)),
            })
    out = pd.DataFrame(rows, columns=_TOTAL_COLUMNS[:-1])
    out["counted_only"] = (out["count"] - out["rows"]).clip(lower=0)
    out["host"] = pd.Categorical(out["host"], categories=cap.hosts)
    out["opcode_name"] = out["opcode_name"].astype("category")
    out = out.astype({"count": np.int64, "errors": np.int64, "rows": np.int64,
                      "counted_only": np.int64, "total_ms": "float64", "mean_ms": "float64",
                      "max_ms": "float64"})
    return out.sort_values(["host", "total_ms"], ascending=[True, False]).reset_index(drop=True)


@requires("requests")
def inflight_writeback(cap: Capture, bin_ms: float = 100.0) -> pd.DataFrame:
    """FUSE WRITE requests in flight over time, per host and bdi, with waits in progress, from
    the rows (in captures with histograms only requests and waits from the capture's row
    threshold on have rows: then these are the slow ones in flight).

    Columns: host, bdi, mount, t_s (bin start, seconds since capture start), inflight_writes (most
    WRITEs in flight at once during the bin), inflight_bytes (bytes of WRITEs in flight at the bin
    start), waiting_tasks (waits on that bdi in progress at the bin start; 0 without waits).
    Bins widen past ``bin_ms`` to keep at most MAX_BINS per host and bdi.
    """
    frame = cap.table("requests")
    columns = ["host", "bdi", "mount", "t_s", "inflight_writes", "inflight_bytes", "waiting_tasks"]
    writes = frame[frame["opcode_name"] == WRITE]
    if writes.empty:
        return pd.DataFrame(columns=columns)
    wait_table = cap.table("waits") if cap.recorded("waits") else None
    pieces = []
    for (host, bdi), group in writes.groupby(["host", "bdi"], observed=True, sort=True):
        start = min(cap.source(str(host)).start_ns, LAST_NS)
        sends = group["send_ts_ns"].to_numpy(dtype=np.int64)
        ends = end_times(group)
        finite_end = np.minimum(np.where(np.isfinite(ends), ends, sends), LAST_NS).astype(np.int64)
        stop = cap.source(str(host)).end_ns or int(max(sends.max(), finite_end.max()))
        stop = max(min(stop, LAST_NS), start + 1)
        bin_ns = max(int(bin_ms * NS_PER_MS), 1, -(-(stop - start) // MAX_BINS))
        edges = np.arange(start, stop + bin_ns, bin_ns, dtype=np.int64)
        # sweep line: level after each send/end event
        times = np.concatenate([sends, np.where(np.isfinite(ends), ends, np.inf)])
        steps = np.concatenate([np.ones(len(sends)), -np.ones(len(sends))])
        lengths = np.concatenate([group["len"].fillna(0).to_numpy(dtype="float64")] * 2) * steps
        order = np.argsort(times, kind="stable")
        times, steps, lengths = times[order], steps[order], lengths[order]
        level = np.cumsum(steps)
        level_bytes = np.cumsum(lengths)
        at_start = np.searchsorted(times, edges[:-1], "right") - 1
        level_start = np.where(at_start >= 0, level[np.maximum(at_start, 0)], 0)
        bytes_start = np.where(at_start >= 0, level_bytes[np.maximum(at_start, 0)], 0)
        peak = level_start.copy()
        bin_of_event = np.searchsorted(edges, times, "right") - 1
        valid = (bin_of_event >= 0) & (bin_of_event < len(peak))
        np.maximum.at(peak, bin_of_event[valid], level[valid])
        waiting = np.zeros(len(peak), dtype=np.int64)
        if wait_table is not None and len(wait_table):
            w = wait_table[(wait_table["host"] == host) & (wait_table["bdi"] == bdi)]
            w_start = np.sort(w["ts_ns"].to_numpy(dtype="float64"))
            w_end = np.sort((w["ts_ns"] + w["duration_ns"]).to_numpy(dtype="float64"))
            probe = edges[:-1].astype("float64")
            waiting = (np.searchsorted(w_start, probe, "right")
                       - np.searchsorted(w_end, probe, "right"))
        pieces.append(pd.DataFrame({
            "host": host, "bdi": bdi,
            "t_s": (edges[:-1] - start) / 1e9,
            "inflight_writes": peak.astype(np.int64),
            "inflight_bytes": bytes_start.astype(np.int64),
            "waiting_tasks": np.asarray(waiting, dtype=np.int64),
        }))
    out = pd.concat(pieces, ignore_index=True)
    out["host"] = pd.Categorical(out["host"].astype(object), categories=cap.hosts)
    out["bdi"] = out["bdi"].astype("category")
    out["mount"] = mount_column(cap, out)
    return out[columns]
