"""Questions about FUSE requests: each one, per opcode, and in-flight WRITEs over time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture
from fusewb.analysis.partials import (
    combine_stats,
    end_times,
    stats_partial,
    with_order,
)
from fusewb.analysis.common import (
    NS_PER_MS,
    mount_column,
    requires,
    seconds_since_start,
)

__all__ = [
    "fuse_requests",
    "requests_by_opcode",
    "request_totals",
    "inflight_writeback",
    "derive_requests",
    "REQUEST_COLUMNS",
    "by_opcode_partial",
    "combine_by_opcode",
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


_OPCODE_KEYS = ["host", "bdi", "mount", "opcode_name"]
_OPCODE_SUMS = {"errors": "failed", "bytes": "len"}
_OPCODE_COLUMNS = ["host", "bdi", "mount", "opcode_name", "count", "ongoing", "errors", "bytes",
                   "p50_ms", "p99_ms", "max_ms", "total_ms"]


def by_opcode_partial(r: pd.DataFrame) -> pd.DataFrame:
    """:func:`requests_by_opcode` of a slice of :func:`fuse_requests` rows with order columns,
    to merge with :func:`combine_by_opcode`."""
    failed = r["error"].fillna(0).ne(0) if len(r) else pd.Series(dtype=bool)
    return stats_partial(r.assign(failed=failed), _OPCODE_KEYS, sums=_OPCODE_SUMS)


def combine_by_opcode(partials: list[pd.DataFrame]) -> pd.DataFrame:
    """:func:`requests_by_opcode` from the partials of every slice of the requests."""
    out = combine_stats(partials, _OPCODE_KEYS, sums=list(_OPCODE_SUMS))
    if out.empty:
        return pd.DataFrame(columns=_OPCODE_COLUMNS)
    out = out.sort_values("total_ms", ascending=False, kind="stable")
    return out[_OPCODE_COLUMNS].reset_index(drop=True)


@requires("requests")
def requests_by_opcode(cap: Capture) -> pd.DataFrame:
    """FUSE requests per host, bdi and opcode, most time first (streamed requests: past the
    tracer's per-CPU event budget fast ones are only counted in the kernel, see request_totals).

    Columns: host, bdi, mount, opcode_name, count, ongoing, errors (replies with error != 0),
    bytes (sum of len), p50_ms, p99_ms, max_ms, total_ms.
    """
    whole = with_order(fuse_requests(cap), cap.hosts, "send_ts_ns")
    return combine_by_opcode([by_opcode_partial(whole)])


@requires("requests")
def request_totals(cap: Capture, by_opcode: pd.DataFrame | None = None) -> pd.DataFrame:
    """Completed FUSE requests per host and opcode as counted in the kernel (every connection
    traced, none lost to the event budget), next to how many were streamed as rows
    (``by_opcode``: :func:`requests_by_opcode`, computed when not given).

    Columns: host, opcode_name, count, errors, total_ms, mean_ms, max_ms, streamed (completed
    rows in the requests table), summed (counted but not streamed). Empty without counters.
    """
    columns = ["host", "opcode_name", "count", "errors", "total_ms", "mean_ms", "max_ms",
               "streamed", "summed"]
    by_opcode = requests_by_opcode(cap) if by_opcode is None else by_opcode
    done = by_opcode.assign(done=by_opcode["count"] - by_opcode["ongoing"]).astype(
        {"host": object, "opcode_name": object})
    streamed = done.groupby(["host", "opcode_name"])["done"].sum()
    rows = []
    for src in cap.sources:
        counters = src.meta.get("counters") or {}
        opcodes = sorted({key.split(".")[1] for key in counters
                          if key.startswith("requests.") and key.count(".") == 2})
        for op in opcodes:
            count = int(counters.get(f"requests.{op}.count", 0))
            total = counters.get(f"requests.{op}.total_ns", 0) / NS_PER_MS
            rows.append({
                "host": src.host, "opcode_name": op, "count": count,
                "errors": int(counters.get(f"requests.{op}.errors", 0)), "total_ms": total,
                "mean_ms": total / count if count else float("nan"),
                "max_ms": counters.get(f"requests.{op}.max_ns", 0) / NS_PER_MS,
                "streamed": int(streamed.get((src.host, op), 0)),
            })
    out = pd.DataFrame(rows, columns=columns[:-1])
    out["summed"] = (out["count"] - out["streamed"]).clip(lower=0)
    out["host"] = pd.Categorical(out["host"], categories=cap.hosts)
    out["opcode_name"] = out["opcode_name"].astype("category")
    out = out.astype({"count": np.int64, "errors": np.int64, "streamed": np.int64,
                      "summed": np.int64, "total_ms": "float64", "mean_ms": "float64",
                      "max_ms": "float64"})
    return out.sort_values(["host", "total_ms"], ascending=[True, False]).reset_index(drop=True)


@requires("requests")
def inflight_writeback(cap: Capture, bin_ms: float = 100.0) -> pd.DataFrame:
    """FUSE WRITE requests in flight over time, per host and bdi, with waits in progress.

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
