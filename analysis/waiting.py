"""Questions about waits on FUSE writeback: every wait with its path, waits per path, and tasks
already asleep in writeback when tracing began.

Captures with in-kernel histograms (schema_version 2, :mod:`fusewb.analysis.histograms`) have
rows only for waits from ``row_threshold_ms`` on and those going on at the end: the counts, sums,
maxima and percentiles per path come from the histograms (per bdi and kernel stack, the stack
attributed to a path by the same rules as the rows' stacks), which count every one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture
from fusewb.analysis.common import (
    mount_column,
    requires,
    seconds_since_start,
)
from fusewb.analysis.histograms import KernelCounts, kernel_counts
from fusewb.analysis.partials import combine_stats, stats_partial, with_order
from fusewb.analysis.paths import (
    PATH_MECHANISMS,
    PATHS,
    is_fuse_frame,
    matching_frame,
    stack_summary,
)
from fusewb.contract.units import NS_PER_MS

__all__ = ["waits", "wait_paths", "stack_paths", "unseen_waits", "derive_waits", "WAIT_COLUMNS",
           "wait_paths_partial", "combine_wait_paths", "wait_counts"]


@requires("stacks")
def stack_paths(cap: Capture) -> pd.DataFrame:
    """The path of every captured stack.

    Columns: host, stack_id, path (categorical, one of ``PATHS``), frame (the frame that decided
    the path, or None), stack (a short ``inner < ... < outer`` summary), depth (frames).
    """

    def build() -> pd.DataFrame:
        stacks = cap.table("stacks")
        rows = []
        for host, stack_id, frames in zip(
            stacks["host"].astype(object), stacks["stack_id"], stacks["frames"]
        ):
            frame_list = list(frames) if frames is not None else []
            path, decisive = matching_frame(frame_list)
            rows.append((host, int(stack_id), path, decisive,
                         stack_summary(frame_list), len(frame_list)))
        out = pd.DataFrame(rows, columns=["host", "stack_id", "path", "frame", "stack", "depth"])
        out = out.drop_duplicates(["host", "stack_id"], keep="last")
        out["host"] = pd.Categorical(out["host"], categories=cap.hosts)
        out["path"] = pd.Categorical(out["path"], categories=PATHS)
        out["stack_id"] = out["stack_id"].astype(np.int64)
        return out.reset_index(drop=True)

    return cap.derived("stack_paths", build)


WAIT_COLUMNS = ["host", "t_s", "ts_ns", "duration_ns", "duration_ms", "ongoing", "pid", "tgid",
                "comm", "bdi", "mount", "ino", "index", "path", "frame", "stack", "stack_id",
                "source"]


def derive_waits(cap: Capture, raw: pd.DataFrame) -> pd.DataFrame:
    """Rows of the waits table (all or some, with their host column) with the columns of
    :func:`waits` derived, in their order; the extra columns of ``raw`` are kept at the end."""
    frame = raw.copy(deep=False)  # copy on write: new columns only, raw stays as it is
    frame["duration_ms"] = frame["duration_ns"].astype("float64") / NS_PER_MS
    frame["t_s"] = seconds_since_start(cap, frame)
    frame["mount"] = mount_column(cap, frame)
    attributed = stack_paths(cap) if cap.recorded("stacks") else None
    if attributed is not None and len(attributed):
        frame = frame.merge(
            attributed[["host", "stack_id", "path", "frame", "stack"]],
            on=["host", "stack_id"], how="left", sort=False,
        )
    else:
        frame["path"] = pd.Categorical([None] * len(frame), categories=PATHS)
        frame["frame"] = None
        frame["stack"] = None
    frame["path"] = pd.Categorical(frame["path"], categories=PATHS).fillna("other")
    frame["stack"] = frame["stack"].fillna("(no stack)")
    frame["host"] = pd.Categorical(frame["host"], categories=cap.hosts)
    extra = [c for c in frame.columns if c not in WAIT_COLUMNS]
    return frame[[c for c in WAIT_COLUMNS if c in frame.columns] + extra]


@requires("waits")
def waits(cap: Capture) -> pd.DataFrame:
    """Every wait on a folio under FUSE writeback, with the kernel path it waited in.

    Columns: host, t_s (seconds since the host's capture start), ts_ns, duration_ns,
    duration_ms, ongoing, pid, tgid, comm, bdi, mount, ino, index, path (one of ``PATHS``),
    frame (deciding frame), stack (summary), stack_id, source. Sorted by host and time.
    """

    def build() -> pd.DataFrame:
        frame = derive_waits(cap, cap.table("waits"))
        return frame.sort_values(["host", "ts_ns"], kind="stable").reset_index(drop=True)

    return cap.derived("waits", build)


_PATH_KEYS = ["host", "bdi", "mount", "path"]
_PATH_COLUMNS = ["host", "bdi", "mount", "path", "count", "rows", "ongoing", "mean_ms", "p50_ms",
                 "p90_ms", "p99_ms", "max_ms", "total_ms", "percentile_error_pct", "tasks",
                 "inodes", "mechanism"]


def wait_counts(cap: Capture) -> KernelCounts:
    """The wait histograms of ``cap``'s hosts that have them, per host, bdi, mount and path
    (the path of the entry's stack in the stacks table, as :func:`stack_paths` attributes it;
    ``other`` when the stack is unknown)."""
    mounts = cap.mount_of()
    attributed = stack_paths(cap) if cap.recorded("stacks") else None
    path_of: dict[tuple[str, int], str] = {}
    if attributed is not None:
        path_of = {(str(h), int(s)): str(p) for h, s, p in zip(
            attributed["host"].astype(object), attributed["stack_id"],
            attributed["path"].astype(object))}

    def key_of(host: str, entry: dict) -> tuple:
        bdi = str(entry.get("bdi"))
        stack_id = int(entry.get("stack_id", -1))
        return (host, bdi, mounts.get((host, bdi), "?"), path_of.get((host, stack_id), "other"))

    return kernel_counts(cap, "waits", key_of)


def wait_paths_partial(w: pd.DataFrame) -> pd.DataFrame:
    """:func:`wait_paths` of a slice of :func:`waits` rows with order columns (see
    :mod:`fusewb.analysis.partials`), to merge with :func:`combine_wait_paths`."""
    return stats_partial(w, _PATH_KEYS, distinct=["pid", "ino"])


def combine_wait_paths(cap: Capture, partials: list[pd.DataFrame]) -> pd.DataFrame:
    """:func:`wait_paths` from the partials of every slice of the waits and the capture's
    histograms."""
    out = combine_stats(partials, _PATH_KEYS, distinct=["pid", "ino"], kernel=wait_counts(cap))
    if out.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in _PATH_COLUMNS}).astype(
            {"host": "category", "bdi": "object", "mount": "object", "path": "category",
             "mechanism": "object"}
        )
    out = out.rename(columns={"pid": "tasks", "ino": "inodes"})
    out["host"] = pd.Categorical(out["host"], categories=cap.hosts)
    out["path"] = pd.Categorical(out["path"], categories=PATHS)
    out = out.sort_values(["host", "path"], kind="stable")
    out["mechanism"] = out["path"].astype(object).map(PATH_MECHANISMS)
    out = out.sort_values(["host", "max_ms"], ascending=[True, False], kind="stable")
    return out[_PATH_COLUMNS].reset_index(drop=True)


@requires("waits")
def wait_paths(cap: Capture) -> pd.DataFrame:
    """Waits per host, bdi (mount) and kernel path, worst path first.

    Columns: host, bdi, mount, path, count (every wait: those the kernel counted in its
    histograms plus the rows going on at the end; captures without histograms: the rows), rows
    (rows of the waits table), ongoing (rows going on at the end), mean_ms, p50_ms, p90_ms, p99_ms
    (from the histograms' buckets, within percentile_error_pct of the true value; exact without
    histograms), max_ms (exact), total_ms, percentile_error_pct (in percent; 0 when exact), tasks
    (distinct pids in the rows), inodes (distinct inodes in the rows), mechanism (one line on
    the kernel mechanism of that path). Ongoing waits count with the time waited so far.
    """
    whole = with_order(waits(cap), cap.hosts, "ts_ns")
    return combine_wait_paths(cap, [wait_paths_partial(whole)])


@requires()
def unseen_waits(cap: Capture) -> pd.DataFrame:
    """Tasks asleep in folio_wait_writeback since before tracing began (meta ``unseen_waiters``,
    read by the tracer from ``/proc/*/stack`` at stop; their bdi and inode are unknown).

    Columns: host, pid, tgid, comm, path, frame, stack, fuse (a ``fuse_*`` function in the
    stack: the wait is almost surely on FUSE), duration_ms (at least the capture's duration),
    ongoing (always True).
    """
    columns = ["host", "pid", "tgid", "comm", "path", "frame", "stack", "fuse", "duration_ms",
               "ongoing"]
    rows = []
    for src in cap.sources:
        end = src.end_ns
        at_least = (end - src.start_ns) / NS_PER_MS if end else float("nan")
        for task in src.meta.get("unseen_waiters") or []:
            if not isinstance(task, dict):
                continue
            frames = [str(f) for f in task.get("frames") or []]
            path, decisive = matching_frame(frames)
            rows.append((src.host, task.get("pid"), task.get("tgid"), task.get("comm"), path,
                         decisive, stack_summary(frames),
                         any(is_fuse_frame(f) for f in frames), at_least,
                         True))
    out = pd.DataFrame(rows, columns=columns)
    out["host"] = pd.Categorical(out["host"], categories=cap.hosts)
    out["path"] = pd.Categorical(out["path"], categories=PATHS)
    out["pid"] = out["pid"].astype("Int64")
    out["tgid"] = out["tgid"].astype("Int64")
    out["fuse"] = out["fuse"].astype(bool)
    out["ongoing"] = out["ongoing"].astype(bool)
    out["duration_ms"] = out["duration_ms"].astype("float64")
    return out
