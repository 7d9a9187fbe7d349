"""Questions about memory management around FUSE writeback: throttling, reclaim, migration."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture
from fusewb.analysis.common import mount_column, requires, seconds_since_start
from fusewb.contract.units import NS_PER_MS

__all__ = [
    "writeback_functions",
    "page_states",
    "page_state_peaks",
    "dirty_throttling",
    "vm_events",
    "reclaim_activity",
    "migration_activity",
    "RECLAIM_KINDS",
    "MIGRATION_KINDS",
    "VMSCAN_THROTTLE_WRITEBACK",
]

RECLAIM_KINDS = ["direct_reclaim", "memcg_reclaim", "shrink_inactive", "vmscan_throttled"]
MIGRATION_KINDS = ["migrate_pages", "compaction"]
# mm_vmscan_throttled stores 1 << enum vmscan_throttle_state; WRITEBACK is bit 0.
VMSCAN_THROTTLE_WRITEBACK = 1 << 0


@requires()  # meta.json only
def writeback_functions(cap: Capture) -> pd.DataFrame:
    """Calls of the kernel functions the kprobe plan times (``fuse_writepage`` with temp pages,
    ``fuse_writepages``, ``fuse_writepage_end``, reclaim and migration), from meta counters
    ``kprobe.<function>.count|total_ns|max_ns``; empty under the tracepoint plan.

    Columns: host, function, count, total_ms, mean_ms, max_ms.
    """
    rows = []
    for src in cap.sources:
        counters = src.meta.get("counters") or {}
        for key, count in counters.items():
            parts = key.split(".")
            if len(parts) != 3 or parts[0] != "kprobe" or parts[2] != "count" or not count:
                continue
            total = counters.get(f"kprobe.{parts[1]}.total_ns", 0)
            rows.append({"host": src.host, "function": parts[1], "count": int(count),
                         "total_ms": total / NS_PER_MS, "mean_ms": total / count / NS_PER_MS,
                         "max_ms": counters.get(f"kprobe.{parts[1]}.max_ns", 0) / NS_PER_MS})
    columns = ["host", "function", "count", "total_ms", "mean_ms", "max_ms"]
    return pd.DataFrame(rows, columns=columns)


PAGE_STATE_COLUMNS = ["nr_dirty", "nr_writeback", "nr_writeback_temp"]


@requires()  # meta.json only
def page_states(cap: Capture) -> pd.DataFrame:
    """/proc/vmstat page counts over the capture (meta ``vmstat``, once a second).

    Columns: host, t_s (seconds since the host's capture start), nr_dirty, nr_writeback,
    nr_writeback_temp (pages; null where the kernel lacks the counter: FUSE's temp pages are
    counted before 6.16 only). Empty for captures without samples.
    """
    frames = []
    for src in cap.sources:
        series = src.meta.get("vmstat") or {}
        ts = series.get("ts_ns") or []
        if not ts:
            continue
        frame = pd.DataFrame({"host": src.host, "t_s": (np.asarray(ts, dtype="float64") - src.start_ns) / 1e9})
        for column in PAGE_STATE_COLUMNS:
            values = list(series.get(column) or [])[: len(ts)]
            values += [None] * (len(ts) - len(values))
            frame[column] = pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce").astype("Int64")
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["host", "t_s", *PAGE_STATE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


@requires()  # meta.json only
def page_state_peaks(cap: Capture) -> pd.DataFrame:
    """The highest /proc/vmstat page counts per host during the capture.

    Columns: host, samples, nr_dirty_max, nr_writeback_max, nr_writeback_temp_max (null where
    the kernel lacks the counter).
    """
    states = page_states(cap)
    columns = ["host", "samples", *(f"{c}_max" for c in PAGE_STATE_COLUMNS)]
    if states.empty:
        return pd.DataFrame(columns=columns)
    grouped = states.groupby("host", sort=True)
    out = grouped[PAGE_STATE_COLUMNS].max().add_suffix("_max").reset_index()
    out.insert(1, "samples", grouped.size().to_numpy())
    return out[columns]


@requires("throttle")
def dirty_throttling(cap: Capture) -> pd.DataFrame:
    """balance_dirty_pages pauses on FUSE bdis per host, bdi and task, most paused first.

    Columns: host, bdi, mount, max_ratio (the bdi's share of the dirty limit, % from meta), pid,
    tgid, comm, pauses (events with pause_ms > 0), events, pause_ms_total, pause_ms_max,
    first_s, last_s, wb_dirty_max, wb_setpoint_max, dirty_max, limit_max.
    """
    frame = cap.table("throttle")
    columns = ["host", "bdi", "mount", "max_ratio", "pid", "tgid", "comm", "pauses", "events",
               "pause_ms_total", "pause_ms_max", "first_s", "last_s", "wb_dirty_max",
               "wb_setpoint_max", "dirty_max", "limit_max"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(
        t_s=seconds_since_start(cap, frame),
        paused=frame["pause_ms"].fillna(0).gt(0),
        pause=frame["pause_ms"].fillna(0).clip(lower=0),
    )
    grouped = frame.groupby(["host", "bdi", "pid", "tgid", "comm"], observed=True, sort=False)
    out = pd.DataFrame({
        "pauses": grouped["paused"].sum().astype(np.int64),
        "events": grouped.size().astype(np.int64),
        "pause_ms_total": grouped["pause"].sum(),
        "pause_ms_max": grouped["pause"].max(),
        "first_s": grouped["t_s"].min(),
        "last_s": grouped["t_s"].max(),
        "wb_dirty_max": grouped["wb_dirty"].max(),
        "wb_setpoint_max": grouped["wb_setpoint"].max(),
        "dirty_max": grouped["dirty"].max(),
        "limit_max": grouped["limit"].max(),
    }).reset_index()
    out["mount"] = mount_column(cap, out)
    ratios = {(r.host, str(r.bdi)): r.max_ratio for r in cap.mounts().itertuples(index=False)}
    out["max_ratio"] = [ratios.get((h, str(b))) for h, b in
                        zip(out["host"].astype(object), out["bdi"].astype(object))]
    out = out.sort_values("pause_ms_total", ascending=False, kind="stable")
    return out[columns].reset_index(drop=True)


@requires("vm")
def vm_events(cap: Capture) -> pd.DataFrame:
    """Every vm event (reclaim, throttling, migration, compaction), system-wide.

    Columns: host, t_s, ts_ns, duration_ms (NaN for single events), kind, pid, tgid, comm,
    nr_scanned, nr_reclaimed, nr_dirty, nr_writeback, nr_immediate, succeeded, failed, mode,
    reason, status, usec_delayed.
    """
    frame = cap.table("vm").copy()
    frame["duration_ms"] = frame["duration_ns"].astype("float64") / NS_PER_MS
    frame["t_s"] = seconds_since_start(cap, frame)
    columns = ["host", "t_s", "ts_ns", "duration_ms", "kind", "pid", "tgid", "comm",
               "nr_scanned", "nr_reclaimed", "nr_dirty", "nr_writeback", "nr_immediate",
               "succeeded", "failed", "mode", "reason", "status", "usec_delayed"]
    return frame[columns].sort_values(["host", "ts_ns"], kind="stable").reset_index(drop=True)


def _activity(cap: Capture, kinds: list[str]) -> pd.DataFrame:
    frame = vm_events(cap)
    frame = frame[frame["kind"].isin(kinds)]
    columns = ["host", "kind", "events", "total_ms", "max_ms", "tasks", "nr_scanned",
               "nr_reclaimed", "nr_dirty", "nr_writeback", "nr_immediate", "succeeded", "failed",
               "throttled_writeback", "usec_delayed"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(
        throttled_writeback=(frame["kind"] == "vmscan_throttled")
        & (frame["reason"].fillna(0).astype(np.int64) & VMSCAN_THROTTLE_WRITEBACK).astype(bool)
    )
    grouped = frame.groupby(["host", "kind"], observed=True, sort=True)
    sums = grouped[["nr_scanned", "nr_reclaimed", "nr_dirty", "nr_writeback", "nr_immediate",
                    "succeeded", "failed", "usec_delayed"]].sum(min_count=0)
    out = pd.DataFrame({
        "events": grouped.size().astype(np.int64),
        "total_ms": grouped["duration_ms"].sum(),
        "max_ms": grouped["duration_ms"].max(),
        "tasks": grouped["pid"].nunique().astype(np.int64),
        "throttled_writeback": grouped["throttled_writeback"].sum().astype(np.int64),
    }).join(sums.astype("float64").fillna(0).astype(np.int64)).reset_index()
    return out[columns]


@requires("vm")
def reclaim_activity(cap: Capture) -> pd.DataFrame:
    """Reclaim per host and kind (direct, memcg, shrink_inactive, vmscan_throttled).

    Columns: host, kind, events, total_ms, max_ms, tasks, nr_scanned, nr_reclaimed, nr_dirty,
    nr_writeback (folios reclaim found under writeback), nr_immediate, succeeded, failed,
    throttled_writeback (vmscan_throttled events with the WRITEBACK reason), usec_delayed.
    """
    return _activity(cap, RECLAIM_KINDS)


@requires("vm")
def migration_activity(cap: Capture) -> pd.DataFrame:
    """Migration and compaction per host and kind (migrate_pages, compaction).

    Columns: host, kind, events, total_ms, max_ms, tasks, nr_scanned, nr_reclaimed, nr_dirty,
    nr_writeback, nr_immediate, succeeded, failed (pages that did not migrate),
    throttled_writeback, usec_delayed.
    """
    return _activity(cap, MIGRATION_KINDS)
