"""The timeline of the HTML report: what waited when, lane by lane, to zoom into.

:func:`longest_waits` and :func:`longest_requests` are the rows it draws: per host the
``limit`` longest waits and requests (those still going on at the end count with their time so
far), read part by part so that memory stays bounded whatever the engine and the capture's size.
:func:`timeline_figure` draws them with Bokeh: a lane per connection with its WRITEs in flight
(other requests too), a lane per FUSE server thread with the replies it sent, a lane per waiting
task with its waits coloured by kernel path, and below the dirty and writeback page counters of
``/proc/vmstat`` with the WRITEs in flight; hovering a span shows its path, stack, inode, bdi,
opcode and unique. The figure is self-contained once embedded with ``bokeh.resources.INLINE``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fusewb.analysis.capture import Capture, check_table, frame_with_host, read_part
from fusewb.analysis.common import requires
from fusewb.analysis.paths import PATHS
from fusewb.analysis.requests import REQUEST_COLUMNS, derive_requests
from fusewb.analysis.vm import page_states
from fusewb.analysis.tables import kernel_ino
from fusewb.analysis.waiting import WAIT_COLUMNS, derive_waits

__all__ = ["longest_waits", "longest_requests", "timeline_figure", "ROWS_DRAWN", "TASK_LANES",
           "PATH_COLORS", "LANES_NAME"]

LANES_NAME = "fusewb-timeline-lanes"  # the Bokeh model name of the lanes' figure
ROWS_DRAWN = 2000  # per host and table: the longest rows drawn
TASK_LANES = 30  # waiting tasks drawn, most time waited first
# One colour per kernel path (in PATHS order), the same in every report; red is kept for the
# requests never answered.
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
            "#7f7f7f", "#17becf", "#aec7e8"]
PATH_COLORS = {path: _PALETTE[i % len(_PALETTE)] for i, path in enumerate(PATHS)}
_WAIT_READ = ("ts_ns", "duration_ns", "ongoing", "pid", "tgid", "comm", "bdi", "ino", "index",
              "stack_id")
_REQUEST_READ = ("send_ts_ns", "end_ts_ns", "duration_ns", "ongoing", "connection", "bdi",
                 "unique", "opcode", "opcode_name", "len", "error", "pid", "tgid", "comm",
                 "end_pid", "end_tgid", "end_comm")
# table -> the columns read, how its question derives them, its columns, its time column
_TABLES: dict[str, tuple[tuple[str, ...], Callable[[Capture, pd.DataFrame], pd.DataFrame],
                         list[str], str]] = {
    "waits": (_WAIT_READ, derive_waits, WAIT_COLUMNS, "ts_ns"),
    "requests": (_REQUEST_READ, derive_requests, REQUEST_COLUMNS, "send_ts_ns"),
}


def _longest(cap: Capture, table: str, limit: int) -> pd.DataFrame:
    """Per host the ``limit`` rows of ``table`` with the largest ``duration_ns``, derived as its
    question derives them, sorted by host and time."""
    columns, derive, names, when = _TABLES[table]
    frames = []
    for src in cap.sources:
        kept: list[pa.Table] = []

        def use(batch: pa.Table, kept: list[pa.Table] = kept) -> None:
            both = pa.concat_tables([*kept, batch.select(list(columns))],
                                    promote_options="permissive")
            if both.num_rows > limit:
                both = both.take(pc.select_k_unstable(
                    both, limit, sort_keys=[("duration_ns", "descending")]))
            kept[:] = [both]

        for part in check_table(src, table):
            read_part(table, part, columns, use)  # a damaged part: the report says so already
        if kept and kept[0].num_rows:
            frames.append(derive(cap, frame_with_host(kept[0], src.host, cap.hosts)))
    if not frames:
        return pd.DataFrame(columns=names)
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["host", when], kind="stable").reset_index(drop=True)


@requires("waits")
def longest_waits(cap: Capture, limit: int = ROWS_DRAWN) -> pd.DataFrame:
    """Per host the ``limit`` longest waits on FUSE writeback (ongoing ones with their time so
    far), as :func:`fusewb.analysis.waiting.waits` has them.

    Columns: those of ``waits`` (host, t_s, ts_ns, duration_ns, duration_ms, ongoing, pid, tgid,
    comm, bdi, mount, ino, index, path, frame, stack, stack_id; not source). Sorted by host and
    time.
    """
    return _longest(cap, "waits", limit)


@requires("requests")
def longest_requests(cap: Capture, limit: int = ROWS_DRAWN) -> pd.DataFrame:
    """Per host the ``limit`` longest FUSE requests (unanswered ones with their time so far), as
    :func:`fusewb.analysis.requests.fuse_requests` has them.

    Columns: those of ``fuse_requests`` (host, t_s, send_ts_ns, end_ts_ns, duration_ns,
    duration_ms, ongoing, connection, bdi, mount, unique, opcode, opcode_name, len, error, pid,
    tgid, comm, end_pid, end_tgid, end_comm). Sorted by host and send time.
    """
    return _longest(cap, "requests", limit)


def _text(values: Any) -> list[str]:
    return ["" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v)
            for v in values]


def _spans(frame: pd.DataFrame, lane: Sequence[str], start: pd.Series, ms: pd.Series,
           extra: dict[str, Any]) -> dict[str, list[Any]]:
    """Columns of a span source: lane, start and end (s), duration text, extra hover fields."""
    end = start + ms / 1000.0
    data = {"lane": list(lane), "start": start.to_list(), "end": end.to_list(),
            "duration": [f"{v:.1f} ms" + (" (still going at the end)" if o else "")
                         for v, o in zip(ms, frame["ongoing"].fillna(False))]}
    data.update({k: _text(v) for k, v in extra.items()})
    return data


def timeline_figure(cap: Capture, waits: pd.DataFrame, requests: pd.DataFrame,
                    threshold_ms: float) -> Any | None:
    """The Bokeh layout of the timeline (see the module docstring), or None with nothing to
    draw. ``waits``/``requests``: :func:`longest_waits`/:func:`longest_requests`."""
    from bokeh.layouts import column  # noqa: PLC0415
    from bokeh.models import ColumnDataSource, HoverTool, Range1d  # noqa: PLC0415
    from bokeh.plotting import figure  # noqa: PLC0415

    if waits.empty and requests.empty:
        return None
    multi = len(cap.hosts) > 1

    def host(h: Any) -> str:
        return f"{h} " if multi else ""

    lanes: list[str] = []
    sources: list[tuple[str, dict[str, list[Any]], dict[str, Any]]] = []
    if len(requests):
        r = requests.assign(host=requests["host"].astype(object),
                            mount=requests["mount"].astype(object))
        conn_lane = [f"{host(h)}requests, bdi {b}"
                     for h, b in zip(r["host"], r["bdi"].astype(object))]
        lanes.extend(dict.fromkeys(conn_lane))
        data = _spans(r, conn_lane, r["t_s"], r["duration_ms"],
                      {"opcode": r["opcode_name"], "unique": r["unique"], "len": r["len"],
                       "bdi": r["bdi"], "mount": r["mount"], "sender": [
                           f"{c}[{p}]" for c, p in zip(r["comm"].astype(object), r["pid"])]})
        data["color"] = ["#d62728" if o else ("#444444" if op == "WRITE" else "#aaaaaa")
                         for o, op in zip(r["ongoing"].fillna(False), r["opcode_name"])]
        sources.append(("request", data, {"opcode": "@opcode", "unique": "@unique",
                                          "bytes": "@len", "bdi": "@bdi", "mount": "@mount",
                                          "sent by": "@sender", "took": "@duration"}))
        answered = r[r["end_pid"].notna()] if "end_pid" in r else r.iloc[:0]
        if len(answered):
            server_lane = [f"{host(h)}server {c}[{p}]" for h, c, p in zip(
                answered["host"], answered["end_comm"].astype(object),
                answered["end_pid"].astype("Int64"))]
            lanes.extend(dict.fromkeys(server_lane))
            end_s = answered["t_s"] + answered["duration_ms"] / 1000.0
            data = _spans(answered, server_lane, end_s, answered["duration_ms"] * 0,
                          {"opcode": answered["opcode_name"], "unique": answered["unique"],
                           "bdi": answered["bdi"], "mount": answered["mount"]})
            data["duration"] = [f"answered after {v:.1f} ms" for v in answered["duration_ms"]]
            data["color"] = ["#2ca02c"] * len(answered)
            sources.append(("reply", data, {"opcode": "@opcode", "unique": "@unique",
                                            "bdi": "@bdi", "mount": "@mount",
                                            "reply": "@duration"}))
    if len(waits):
        w = waits.assign(host=waits["host"].astype(object), path=waits["path"].astype(object))
        w["task"] = [f"{host(h)}{c}[{p}]" for h, c, p in zip(w["host"], w["comm"].astype(object),
                                                             w["pid"])]
        top = w.groupby("task")["duration_ms"].sum().nlargest(TASK_LANES).index
        w = w[w["task"].isin(top)]
        lanes.extend(dict.fromkeys(w.sort_values("t_s")["task"]))
        for path in [p for p in PATHS if p in set(w["path"])]:
            mine = w[w["path"] == path]
            data = _spans(mine, mine["task"], mine["t_s"], mine["duration_ms"],
                          {"path": mine["path"], "stack": mine["stack"], "bdi": mine["bdi"],
                           "mount": mine["mount"], "inode": [
                               kernel_ino(i) if not pd.isna(i) else None for i in mine["ino"]]})
            data["color"] = [PATH_COLORS[path]] * len(mine)
            sources.append((f"wait in {path}", data, {
                "waited": "@duration", "inode": "@inode", "bdi": "@bdi", "mount": "@mount",
                "stack": "@stack"}))
    if multi:  # each host's lanes together, in the capture's host order
        lanes.sort(key=lambda lane: cap.hosts.index(lane.split(" ", 1)[0]))
    lanes = list(reversed(lanes))  # first lane on top
    end_s = max(float(max(d["end"]) if d["end"] else 0.0) for _, d, _ in sources)
    x_range = Range1d(0, max(end_s * 1.02, 0.001), bounds=(0, max(end_s * 1.05, 0.001)))
    lanes_fig = figure(name=LANES_NAME, y_range=lanes, x_range=x_range,
                       height=max(90 + 26 * len(lanes), 260),
                       sizing_mode="stretch_width", tools="xpan,xwheel_zoom,box_zoom,reset,save",
                       active_scroll="xwheel_zoom", title="What waited when (drag to pan, "
                       "scroll to zoom; hover a span for its details)",
                       x_axis_label="seconds since the capture started")
    for kind, data, tips in sources:
        source = ColumnDataSource(data)
        if kind == "reply":
            glyph = lanes_fig.scatter("start", "lane", source=source, size=7, marker="diamond",
                                      color="color", legend_label="reply sent")
        else:
            glyph = lanes_fig.hbar(y="lane", left="start", right="end", height=0.7,
                                   color="color", source=source, alpha=0.8,
                                   legend_label="FUSE request (red: never answered)"
                                   if kind == "request" else kind.removeprefix("wait in "))
        lanes_fig.add_tools(HoverTool(renderers=[glyph], tooltips=[
            (k, v) for k, v in [("", kind), *tips.items()]]))
    _legend_outside(lanes_fig)
    lanes_fig.yaxis.major_label_text_font_size = "8pt"
    lanes_fig.ygrid.grid_line_color = None
    counters = _counters_figure(cap, requests, x_range, multi)
    return column([lanes_fig, counters] if counters is not None else [lanes_fig],
                  sizing_mode="stretch_width")


def _counters_figure(cap: Capture, requests: pd.DataFrame, x_range: Any, multi: bool
                     ) -> Any | None:
    """Dirty and writeback pages (/proc/vmstat) and WRITEs in flight over time."""
    from bokeh.models import HoverTool, LinearAxis, Range1d  # noqa: PLC0415
    from bokeh.plotting import figure  # noqa: PLC0415

    pages = page_states(cap)
    writes = requests[requests["opcode_name"].astype(object) == "WRITE"] if len(requests) \
        else requests
    if pages.empty and writes.empty:
        return None
    fig = figure(x_range=x_range, height=220, sizing_mode="stretch_width",
                 tools="xpan,xwheel_zoom,reset", active_scroll="xwheel_zoom",
                 title="Dirty and writeback pages (/proc/vmstat), WRITEs in flight",
                 x_axis_label="seconds since the capture started", y_axis_label="pages")
    colors = iter(["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#e377c2"])
    for h, mine in pages.groupby(pages["host"].astype(object)) if len(pages) else []:
        for counter in ("nr_dirty", "nr_writeback", "nr_writeback_temp"):
            values = mine[counter]
            if values.notna().any():
                fig.step(mine["t_s"].to_list(), values.astype("float64").to_list(), mode="after",
                         color=next(colors, "#333333"), line_width=2,
                         legend_label=f"{h} {counter}" if multi else counter)
    if len(writes):
        fig.extra_y_ranges = {"writes": Range1d(0, 1)}
        peak = 1
        for (h, b), mine in writes.groupby([writes["host"].astype(object),
                                            writes["bdi"].astype(object)]):
            end = mine["t_s"] + mine["duration_ms"] / 1000.0
            times = np.concatenate([mine["t_s"].to_numpy(), end.to_numpy()])
            steps = np.concatenate([np.ones(len(mine)), -np.ones(len(mine))])
            order = np.argsort(times, kind="stable")
            level = np.cumsum(steps[order])
            peak = max(peak, int(level.max()))
            fig.step(times[order].tolist(), level.tolist(), mode="after", y_range_name="writes",
                     color="#d62728", line_width=2, line_dash="dashed",
                     legend_label=f"{h + ' ' if multi else ''}WRITEs in flight (bdi {b}, "
                     "rows drawn)")
        fig.extra_y_ranges["writes"].end = peak * 1.1
        fig.add_layout(LinearAxis(y_range_name="writes", axis_label="WRITEs in flight"), "right")
    fig.add_tools(HoverTool(tooltips=[("t", "$x{0.000} s"), ("value", "$y{0}")]))
    _legend_outside(fig)
    return fig


def _legend_outside(fig: Any) -> None:
    """The figure's legend on its right, off the data; a click hides a series."""
    legend = fig.legend[0]
    fig.legend.click_policy = "hide"
    fig.legend.label_text_font_size = "8pt"
    fig.center = [r for r in fig.center if r is not legend]
    fig.add_layout(legend, "right")
