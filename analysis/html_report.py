"""The HTML report: one self-contained file, plots embedded as base64 PNG (matplotlib, Agg).

Plots: wait-duration histogram per path on a log scale (every wait: the in-kernel histograms
where the capture has them), a timeline of in-flight FUSE WRITEs against waits, the tasks and the
inodes that waited longest (these three from the rows). Tables: capture summary, what has rows,
waits per path, flags with evidence and mechanism, kernel notes; percentiles from buckets are
stated with their error.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fusewb.analysis.capture import Capture
from fusewb.analysis.findings import FLAG_KINDS
from fusewb.analysis.paths import PATH_MECHANISMS, PATHS
from fusewb.analysis.requests import inflight_writeback
from fusewb.analysis.waiting import wait_counts, waits
from fusewb.contract.histogram import ERROR_TEXT, Histogram, bucket_bounds

__all__ = ["render_html", "path_histograms", "FLAG_ROWS_SHOWN"]

FLAG_ROWS_SHOWN = 500
SCATTER_POINTS = 5000  # most waits drawn on the timeline


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def path_histograms(cap: Capture, w: pd.DataFrame) -> dict[str, Histogram]:
    """Every wait per path: the in-kernel histograms and the ongoing rows of the hosts that have
    them, every row of the others."""
    counts = wait_counts(cap)
    out: dict[str, Histogram] = {}
    for key, tally in counts.groups.items():
        out.setdefault(key[-1], Histogram())
        out[key[-1]] += tally.hist
    if len(w):
        counted = w["host"].astype(object).isin(counts.hosts).to_numpy(dtype=bool)
        rows = w[~counted | w["ongoing"].to_numpy(dtype=bool)]
        for path, durations in rows.groupby(rows["path"].astype(object))["duration_ns"]:
            out.setdefault(path, Histogram())
            out[path] += Histogram.of_values(durations.to_numpy())
    return out


def _histogram(histograms: dict[str, Histogram]) -> Figure | None:
    """Waits per path by duration, from each path's buckets (placed at their midpoints)."""
    points = {}
    for path, hist in histograms.items():
        filed = [(sum(bucket_bounds(i)) / 2 / 1e6, n) for i, n in hist.buckets.items() if i]
        if filed:
            points[path] = np.array(filed, dtype="float64")
    if not points:
        return None
    values = np.concatenate([p[:, 0] for p in points.values()])
    # whole decades, at least two, so one wait or a narrow spread still reads on a log axis
    low = np.floor(np.log10(max(values.min(), 1e-3)))
    high = max(np.ceil(np.log10(max(values.max(), 1e-3) * 1.01)), low + 2)
    bins = np.logspace(low, high, int(10 * (high - low)) + 1)
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    for path in PATHS:
        if path in points:
            ax.hist(points[path][:, 0], bins=bins, weights=points[path][:, 1], histtype="step",
                    linewidth=1.6, label=f"{path} ({histograms[path].count})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8)
    ax.set_xlabel("wait on FUSE writeback (ms, log)")
    ax.set_ylabel("waits")
    ax.set_title("Wait duration per kernel path (every wait)")
    ax.legend(fontsize=8)
    return fig


def _timeline(cap: Capture, w: pd.DataFrame, threshold_ms: float) -> Figure | None:
    inflight = inflight_writeback(cap) if cap.recorded("requests") else pd.DataFrame()
    if inflight.empty and w.empty:
        return None
    fig = Figure(figsize=(9, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.4]})
    if len(inflight):
        for (host, bdi), group in inflight.groupby(["host", "bdi"], observed=True):
            label = f"{host} {bdi}" if len(cap.hosts) > 1 else f"bdi {bdi}"
            top.step(group["t_s"], group["inflight_writes"], where="post", label=label)
        top.legend(fontsize=7, loc="upper right")
    top.set_ylabel("WRITEs in flight")
    top.set_title("In-flight FUSE WRITEs against waits on writeback (rows)")
    shown = w
    if len(w) > SCATTER_POINTS:
        # keep every wait over the threshold, thin out the short ones evenly
        long = w[w["duration_ms"] >= threshold_ms]
        short = w[w["duration_ms"] < threshold_ms]
        step = max(len(short) // max(SCATTER_POINTS - len(long), 1), 1)
        shown = pd.concat([long, short.iloc[::step]])
    for path in PATHS:
        mine = shown[shown["path"] == path]
        if len(mine):
            # each wait spans [start, start + duration] at the height of its duration
            y = mine["duration_ms"].clip(lower=1e-3)
            dots = bottom.scatter(mine["t_s"], y, s=8, alpha=0.6, label=path)
            bottom.hlines(y, mine["t_s"], mine["t_s"] + mine["duration_ms"] / 1000.0,
                          colors=dots.get_facecolor(), linewidth=1.5, alpha=0.6)
    if len(shown):
        bottom.axhline(threshold_ms, color="grey", linestyle=":", linewidth=1)
        bottom.set_yscale("log")
        bottom.legend(fontsize=7, loc="upper right", ncol=3)
    bottom.set_ylabel("wait (ms, log)")
    bottom.set_xlabel("seconds since capture start (each wait drawn from its start to its end)")
    return fig


def _top_bar(labels: list[str], values: np.ndarray, title: str) -> Figure | None:
    if not labels:
        return None
    fig = Figure(figsize=(9, 0.35 * len(labels) + 1.2))
    ax = fig.subplots()
    ax.barh(labels[::-1], values[::-1])
    ax.set_xlabel("total time waited (ms)")
    ax.set_title(title)
    return fig


def _top_tasks(w: pd.DataFrame) -> Figure | None:
    if w.empty:
        return None
    totals = w.groupby(["comm", "pid"], observed=True)["duration_ms"].sum().nlargest(10)
    labels = [f"{comm}[{pid}]" for comm, pid in totals.index]
    return _top_bar(labels, totals.to_numpy(), "Tasks that waited longest (rows)")


def _top_inodes(w: pd.DataFrame) -> Figure | None:
    if w.empty:
        return None
    totals = w.groupby(["mount", "ino"], observed=True)["duration_ms"].sum().nlargest(10)
    labels = [f"{mount} ino {ino}" for mount, ino in totals.index]
    return _top_bar(labels, totals.to_numpy(), "Inodes waited on longest (rows)")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if r.get(c) is None else str(r.get(c)))}</td>"
                         for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


_LATENCIES = ["mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"]


def _error_note(rows: list[dict[str, Any]]) -> str:
    """The stated error under a table whose percentiles (some of them) come from buckets."""
    if any(row.get("percentile_error_pct") for row in rows):
        return f"<p>{html.escape(ERROR_TEXT)} (max exact)</p>"
    return ""


_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 80em; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; } .critical { color: #b00; font-weight: bold; }
.verdict { border-left: 6px solid #b00; background: #fff6f6; padding: 0.2em 1em;
  margin: 1em 0; font-size: 1.05em; }
img { max-width: 100%; display: block; margin: 1em 0; }
"""


def _verdict(said: dict[str, Any]) -> str:
    """The verdict box: what happened, then what to do."""
    actions = "".join(f"<li>{html.escape(a)}</li>" for a in said["actions"])
    return ("<div class='verdict'><h2>Verdict</h2>"
            + "".join(f"<p>{html.escape(s)}</p>" for s in said["sentences"])
            + (f"<h3>What to do</h3><ul>{actions}</ul>" if actions else "") + "</div>")


def render_html(cap: Capture, report: dict[str, Any]) -> str:
    """The whole HTML document for ``report`` (from ``build_report``) of ``cap``."""
    w = waits(cap) if cap.recorded("waits") else pd.DataFrame(
        columns=["host", "duration_ns", "duration_ms", "ongoing", "path", "t_s", "comm", "pid",
                 "mount", "ino"])
    threshold = report["threshold_ms"]
    figures = [_histogram(path_histograms(cap, w)), _timeline(cap, w, threshold), _top_tasks(w),
               _top_inodes(w)]
    images = "".join(_png(f) for f in figures if f is not None) or "<p>no waits to plot</p>"
    capture = report["capture"]
    sources = [
        {**s, "lost_events": (s["lost_events"] or {}).get("total", 0),
         "mounts": ", ".join(f"{m.get('mountpoint')} ({m.get('bdi')})" for m in s["mounts"])}
        for s in capture["sources"]
    ]
    flag_rows = report["flags"][:FLAG_ROWS_SHOWN]
    more = len(report["flags"]) - len(flag_rows)
    mechanisms = [{"flag": k, "mechanism": FLAG_KINDS[k].mechanism}
                  for k in report["flag_counts"]]
    path_notes = [{"path": r["path"], "mechanism": PATH_MECHANISMS.get(r["path"], "")}
                  for r in report["waits_by_path"]]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>fusewb report: {html.escape(capture['path'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>fusewb report</h1><p>{html.escape(capture['path'])} &middot; threshold "
        f"{threshold:g} ms &middot; {html.escape(report['generator'])}</p>",
        _verdict(report["verdict"]),
        "<h2>Capture</h2>",
        _table(sources, ["host", "kernel_release", "plan", "duration_s", "complete",
                         "lost_events", "mounts"]),
        "<h2>Flags</h2>",
        "<p>" + html.escape(", ".join(f"{n} {k}" for k, n in report["flag_counts"].items())
                            or "none") + "</p>",
        _table(flag_rows, ["flag", "severity", "host", "path", "comm", "pid", "mount", "bdi",
                           "ino", "duration_ms", "ongoing", "count", "evidence"]),
        f"<p>... {more} more flags (see --format json)</p>" if more > 0 else "",
        _table(mechanisms, ["flag", "mechanism"]),
        "".join(f"<p>not checked: {html.escape(k)} ({html.escape(v)})</p>"
                for k, v in report["not_checked"].items()),
        "<h2>What has rows</h2>",
        "".join(f"<p>{html.escape(note)}</p>" for note in report.get("row_notes", [])),
        "<h2>Waits per path</h2>",
        _table(report["waits_by_path"], ["host", "mount", "path", "count", "rows", "ongoing",
                                         *_LATENCIES, "total_ms", "tasks", "inodes"]),
        _error_note(report["waits_by_path"]),
        _table(path_notes, ["path", "mechanism"]),
        "<h2>Plots</h2>", images,
        "<h2>FUSE requests per opcode</h2>",
        _table(report["requests_by_opcode"], ["host", "mount", "opcode_name", "count", "rows",
                                              "ongoing", "errors", "bytes", *_LATENCIES]),
        _error_note(report["requests_by_opcode"]),
        _table(report["request_totals"], ["host", "opcode_name", "count", "errors", "mean_ms",
                                          "max_ms", "rows", "counted_only"])
        if report["request_totals"] else "",
        "<h2>Asleep in writeback since before tracing (bdi unknown)</h2>",
        _table(report["unseen_waiters"], ["host", "comm", "pid", "path", "fuse", "duration_ms",
                                          "stack"]),
        "<h2>Dirty throttling</h2>",
        _table(report["dirty_throttling"], ["host", "mount", "comm", "pid", "pauses",
                                            "pause_ms_total", "pause_ms_max", "max_ratio"]),
        "<h2>Reclaim and migration</h2>",
        _table(report["reclaim"] + report["migration"],
               ["host", "kind", "events", "total_ms", "max_ms", "nr_scanned", "nr_reclaimed",
                "nr_writeback", "succeeded", "failed", "throttled_writeback"]),
        "<h2>What this kernel did</h2>",
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report["kernel_notes"]) + "</ul>"
        if report["kernel_notes"] else "<p>nothing to note</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
