"""Where tasks waited: the kernel stacks of the waits on FUSE writeback, weighted by the time
waited, as collapsed stacks and as a flame graph.

:func:`stack_weights` counts every wait per host, bdi and kernel stack: the in-kernel histograms
(count and summed time per stack, every ended wait) plus the rows they do not count (waits still
going on at the end; every row of captures without histograms). It reads the waits table part
by part (four columns), so its memory does not grow with the capture. :func:`folded_lines`
writes them in the collapsed format of flamegraph.pl, inferno and speedscope
(``frame;frame;frame weight``, outermost frame first, weight in microseconds waited).
:func:`flame_rects` lays the stacks out as a flame graph (one rectangle per frame and caller
chain) for the HTML report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from fusewb.analysis.capture import Capture, check_table, read_part
from fusewb.analysis.common import requires
from fusewb.analysis.histograms import histogram_hosts
from fusewb.analysis.paths import clean_frames
from fusewb.analysis.waiting import stack_paths

__all__ = ["stack_weights", "folded_lines", "folded_text", "flame_rects", "FlameRect",
           "flame_figure", "WEIGHT_UNIT"]

WEIGHT_UNIT = "microseconds waited"
_COLUMNS = ("stack_id", "duration_ns", "ongoing", "bdi")


def _row_weights(cap: Capture, host: str, only_ongoing: bool) -> pd.DataFrame:
    """count and total_ns per bdi and stack_id of ``host``'s wait rows (the ongoing ones only
    when ``only_ongoing``), read part by part."""
    pieces: list[pd.DataFrame] = []

    def use(batch: pa.Table) -> None:
        frame = batch.select(list(_COLUMNS)).to_pandas()
        if only_ongoing:
            frame = frame[frame["ongoing"].fillna(False).astype(bool)]
        if len(frame):
            frame["bdi"] = frame["bdi"].astype(object)
            pieces.append(frame.groupby(["bdi", "stack_id"], dropna=False, sort=False)
                          ["duration_ns"].agg(["count", "sum"]).reset_index())

    for part in check_table(cap.source(host), "waits"):
        read_part("waits", part, _COLUMNS, use)  # a damaged part: the report says so already
    if not pieces:
        return pd.DataFrame(columns=["bdi", "stack_id", "count", "sum"])
    merged = pd.concat(pieces, ignore_index=True)
    return merged.groupby(["bdi", "stack_id"], dropna=False, sort=False)[["count", "sum"]] \
        .sum().reset_index()


@requires("waits")
def stack_weights(cap: Capture) -> pd.DataFrame:
    """Every wait on FUSE writeback per host, bdi and kernel stack, with the time waited.

    Columns: host, bdi, stack_id, path (the analysis' path of the stack), count, total_ns
    (waits still going on count with their time so far), frames (readable frames, outermost
    first). Most time first.
    """
    rows = []
    counted = histogram_hosts(cap)
    for src in cap.sources:
        if src.host in counted:
            for entry in src.meta["histograms"].get("waits") or []:
                rows.append((src.host, entry.get("bdi"), int(entry["stack_id"]),
                             int(entry.get("count") or 0), int(entry.get("total_ns") or 0)))
        if src.table_files("waits"):
            found = _row_weights(cap, src.host, only_ongoing=src.host in counted)
            rows.extend((src.host, b, int(s), int(n), int(t)) for b, s, n, t in zip(
                found["bdi"], found["stack_id"], found["count"], found["sum"]))
    columns = ["host", "bdi", "stack_id", "count", "total_ns"]
    out = pd.DataFrame(rows, columns=columns)
    out = out.groupby(["host", "bdi", "stack_id"], dropna=False, sort=False)[
        ["count", "total_ns"]].sum().reset_index()
    frames: dict[tuple[str, int], list[str]] = {}
    paths = pd.DataFrame(columns=["host", "stack_id", "path"])
    if cap.recorded("stacks"):
        stacks = cap.table("stacks")
        for host, stack_id, stack in zip(stacks["host"].astype(object), stacks["stack_id"],
                                         stacks["frames"]):
            frames[(str(host), int(stack_id))] = clean_frames(stack)[::-1]
        paths = stack_paths(cap)[["host", "stack_id", "path"]].astype({"host": object,
                                                                       "path": object})
    out = out.merge(paths, on=["host", "stack_id"], how="left")
    out["frames"] = [frames.get((str(h), int(s))) or ["[unknown stack]"]
                     for h, s in zip(out["host"], out["stack_id"])]
    out = out.sort_values("total_ns", ascending=False, kind="stable").reset_index(drop=True)
    return out[["host", "bdi", "stack_id", "path", "count", "total_ns", "frames"]]


def folded_lines(weights: pd.DataFrame) -> list[str]:
    """Collapsed stacks (``frame;frame;frame weight``, outermost frame first, weight in
    microseconds waited, at least 1) of :func:`stack_weights`; stacks with the same frames on
    several hosts or bdis are summed."""
    totals: dict[str, int] = {}
    for frames, total in zip(weights["frames"], weights["total_ns"]):
        key = ";".join(f.replace(";", ":").replace(" ", "_") for f in frames)
        totals[key] = totals.get(key, 0) + int(total)
    return [f"{key} {max(total // 1000, 1)}" for key, total in totals.items() if total > 0]


def folded_text(cap: Capture, host: str | None = None) -> str:
    """The collapsed stacks of ``cap``'s waits (of ``host`` only when given), a line each."""
    weights = stack_weights(cap)
    if host is not None:
        weights = weights[weights["host"] == host]
    return "".join(f"{line}\n" for line in folded_lines(weights))


@dataclass(frozen=True)
class FlameRect:
    """One frame of the flame graph: its caller chain's share of the time waited
    (``x0``..``x1`` in ns), its depth (0: outermost), name, stack, time and waits."""

    x0: int
    x1: int
    depth: int
    name: str
    stack: str
    total_ns: int
    count: int


def flame_rects(stacks: Iterable[tuple[list[str], int, int]]) -> list[FlameRect]:
    """The flame graph of ``(frames outermost first, total_ns, count)`` stacks: frames with the
    same caller chain merged, siblings ordered by name (as flamegraph.pl does)."""
    tree: dict[str, dict] = {}
    for frames, total, count in stacks:
        level = tree
        for name in frames:
            node = level.setdefault(name, {"t": 0, "n": 0, "kids": {}})
            node["t"] += int(total)
            node["n"] += int(count)
            level = node["kids"]
    out: list[FlameRect] = []

    def lay(level: dict[str, dict], x: int, depth: int, chain: list[str]) -> None:
        for name in sorted(level):
            node = level[name]
            here = [*chain, name]
            out.append(FlameRect(x, x + node["t"], depth, name, " > ".join(here), node["t"],
                                 node["n"]))
            lay(node["kids"], x, depth + 1, here)
            x += node["t"]

    lay(tree, 0, 0, [])
    return out


def flame_figure(weights: pd.DataFrame, title: str) -> Any | None:
    """The flame graph of :func:`stack_weights` as a Bokeh figure (outermost frame at the
    bottom, width = time waited; hover a frame for its time, share and caller chain), or None
    without waits. Frames are coloured by their wait path where one path owns them."""
    from bokeh.models import ColumnDataSource, HoverTool  # noqa: PLC0415
    from bokeh.plotting import figure  # noqa: PLC0415

    from fusewb.analysis.timeline import PATH_COLORS  # noqa: PLC0415

    if weights.empty or int(weights["total_ns"].sum()) <= 0:
        return None
    path_of: dict[str, set[str]] = {}
    for frames, path in zip(weights["frames"], weights["path"]):
        for depth in range(len(frames)):
            path_of.setdefault(" > ".join(frames[: depth + 1]), set()).add(str(path))
    rects = flame_rects(zip(weights["frames"], weights["total_ns"], weights["count"]))
    total = max(r.x1 for r in rects)
    depth = max(r.depth for r in rects) + 1

    def color(rect: FlameRect) -> str:
        paths = path_of.get(rect.stack, set())
        return PATH_COLORS.get(next(iter(paths)), "#bbbbbb") if len(paths) == 1 else "#bbbbbb"

    data = {
        "left": [r.x0 / total for r in rects], "right": [r.x1 / total for r in rects],
        "bottom": [r.depth for r in rects], "top": [r.depth + 0.95 for r in rects],
        "name": [r.name for r in rects], "stack": [r.stack for r in rects],
        "time": [f"{r.total_ns / 1e6:.1f} ms in {r.count} wait(s)" for r in rects],
        "share": [f"{100 * (r.x1 - r.x0) / total:.1f}%" for r in rects],
        "color": [color(r) for r in rects],
        "label": [r.name if (r.x1 - r.x0) / total > 0.06 else "" for r in rects],
        "mid": [r.depth + 0.45 for r in rects],
    }
    source = ColumnDataSource(data)
    fig = figure(height=60 + 22 * depth, sizing_mode="stretch_width", x_range=(0, 1),
                 y_range=(0, depth), tools="xwheel_zoom,xpan,reset,save",
                 active_scroll="xwheel_zoom", title=title)
    quads = fig.quad(left="left", right="right", bottom="bottom", top="top", color="color",
                     line_color="white", source=source)
    fig.text(x="left", y="mid", text="label", source=source, text_font_size="8pt",
             text_baseline="middle", x_offset=3)
    fig.add_tools(HoverTool(renderers=[quads], tooltips=[
        ("frame", "@name"), ("waited", "@time"), ("share", "@share"), ("callers", "@stack")]))
    fig.axis.visible = False
    fig.grid.grid_line_color = None
    return fig
