"""Questions about waits on FUSE writeback: every wait with its path, waits per path, and tasks
already asleep in writeback when tracing began."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture
from fusewb.analysis.common import (
    NS_PER_MS,
    duration_stats,
    mount_column,
    requires,
    seconds_since_start,
)
from fusewb.analysis.paths import (
    PATH_MECHANISMS,
    PATHS,
    is_fuse_frame,
    matching_frame,
    stack_summary,
)

__all__ = ["waits", "wait_paths", "stack_paths", "unseen_waits"]


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


@requires("waits")
def waits(cap: Capture) -> pd.DataFrame:
    """Every wait on a folio under FUSE writeback, with the kernel path it waited in.

    Columns: host, t_s (seconds since the host's capture start), ts_ns, duration_ms, ongoing,
    pid, tgid, comm, bdi, mount, ino, index, path (one of ``PATHS``), frame (deciding frame),
    stack (summary), stack_id, source. Sorted by host and time.
    """

    def build() -> pd.DataFrame:
        raw = cap.table("waits")
        frame = raw.copy()
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
        columns = ["host", "t_s", "ts_ns", "duration_ms", "ongoing", "pid", "tgid", "comm", "bdi",
                   "mount", "ino", "index", "path", "frame", "stack", "stack_id", "source"]
        return frame[columns].sort_values(["host", "ts_ns"], kind="stable").reset_index(drop=True)

    return cap.derived("waits", build)


@requires("waits")
def wait_paths(cap: Capture) -> pd.DataFrame:
    """Waits per host and path, worst path first.

    Columns: host, path, count, ongoing, p50_ms, p99_ms, max_ms, total_ms, tasks (distinct pids),
    inodes (distinct inodes), mechanism (one line on the kernel mechanism of that path).
    """
    frame = waits(cap)
    columns = ["host", "path", "count", "ongoing", "p50_ms", "p99_ms", "max_ms", "total_ms",
               "tasks", "inodes", "mechanism"]
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}).astype(
            {"host": "category", "path": "category", "mechanism": "object"}
        )
    grouped = frame.groupby(["host", "path"], observed=True, sort=True)
    out = duration_stats(grouped["duration_ms"])
    out["ongoing"] = grouped["ongoing"].sum().astype(np.int64)
    out["tasks"] = grouped["pid"].nunique().astype(np.int64)
    out["inodes"] = grouped["ino"].nunique().astype(np.int64)
    out = out.reset_index()
    out["mechanism"] = out["path"].astype(object).map(PATH_MECHANISMS)
    out = out.sort_values(["host", "max_ms"], ascending=[True, False], kind="stable")
    return out[columns].reset_index(drop=True)


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
