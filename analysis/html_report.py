"""The HTML report: one self-contained file (Bokeh's JavaScript inline, 1.3 MB: it works
offline).

From the top: the verdict (what happened, what to do), per host totals on a capture of several
hosts, the timeline to explore (:mod:`fusewb.analysis.timeline`), where tasks waited as a
time-weighted flame graph (:mod:`fusewb.analysis.flame`), then one table per question
(:mod:`fusewb.analysis.tables`: human units, columns that carry one value named once), the
kernel mechanisms and what this kernel did. Every figure reads bounded rows (the longest waits
and requests, the stacks' summed time) part by part, so the report is the same for every
engine and its memory does not grow with the capture.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from fusewb.analysis.capture import Capture
from fusewb.analysis.findings import FLAG_KINDS
from fusewb.analysis.flame import WEIGHT_UNIT, flame_figure, stack_weights
from fusewb.analysis.paths import PATH_MECHANISMS
from fusewb.analysis.tables import QUESTIONS, Question, people_rows
from fusewb.analysis.timeline import (
    ROWS_DRAWN,
    TASK_LANES,
    longest_requests,
    longest_waits,
    timeline_figure,
)
from fusewb.contract.histogram import ERROR_TEXT

__all__ = ["render_html", "FLAG_ROWS_SHOWN"]

FLAG_ROWS_SHOWN = 500

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; max-width: 90em; color: #222; }
h1 { margin-bottom: 0.1em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
p.answers { color: #555; margin: 0.2em 0 0.5em; font-style: italic; }
p.same { color: #555; margin: 0.2em 0; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #f3f3f3; }
.verdict { border-left: 6px solid #b00; background: #fff6f6; padding: 0.3em 1.2em;
  margin: 1em 0; font-size: 1.08em; line-height: 1.45; }
.verdict.quiet { border-left-color: #2a2; background: #f5fff5; }
.critical { color: #b00; font-weight: bold; } .high { color: #c60; font-weight: bold; }
.meta { color: #555; }
"""

_NUMERIC_UNITS = {"ms", "bytes"}


def _people_table(question: Question, rows: list[dict[str, Any]], limit: int | None = None
                  ) -> str:
    """One question's table: the sentence it answers, its rows for people, what is the same."""
    shown = rows[:limit] if limit else rows
    table = people_rows(shown, question.columns)
    head = (f"<h2>{html.escape(question.title)}</h2>"
            f"<p class='answers'>{html.escape(question.answers)}</p>")
    if not rows:
        return head + "<p>none</p>"
    units = {c.head: c.unit for c in question.columns}
    cells = []
    for row in table.rows:
        tds = []
        for name, value in zip(table.heads, row):
            numeric = units.get(name) in _NUMERIC_UNITS or value.replace(".", "").isdigit()
            style = f" class='{value}'" if name == "severity" else (
                " class='num'" if numeric else "")
            tds.append(f"<td{style}>{html.escape(value)}</td>")
        cells.append("<tr>" + "".join(tds) + "</tr>")
    same = ("<p class='same'>in every row (that has one): "
            f"{html.escape(', '.join(table.same))}</p>" if table.same else "")
    more = (f"<p class='same'>... {len(rows) - len(shown)} more (see --format json)</p>"
            if len(rows) > len(shown) else "")
    heads = "".join(f"<th>{html.escape(h)}</th>" for h in table.heads)
    return f"{head}{same}<table><tr>{heads}</tr>{''.join(cells)}</table>{more}"


def _error_note(rows: list[dict[str, Any]]) -> str:
    """The stated error under a table whose percentiles (some of them) come from buckets."""
    if any(row.get("percentile_error_pct") for row in rows):
        return f"<p class='same'>{html.escape(ERROR_TEXT)} (max exact)</p>"
    return ""


def _verdict(said: dict[str, Any], quiet: bool) -> str:
    """The verdict box: what happened, then what to do."""
    actions = "".join(f"<li>{html.escape(a)}</li>" for a in said["actions"])
    return (f"<div class='verdict{' quiet' if quiet else ''}'><h2>Verdict</h2>"
            + "".join(f"<p>{html.escape(s)}</p>" for s in said["sentences"])
            + (f"<h3>What to do</h3><ul>{actions}</ul>" if actions else "") + "</div>")


def _figures(cap: Capture, report: dict[str, Any]) -> tuple[str, str, str]:
    """Bokeh's inline JavaScript, and the timeline's and the flame graph's HTML."""
    from bokeh.embed import components  # noqa: PLC0415
    from bokeh.resources import Resources  # noqa: PLC0415

    waits = longest_waits(cap) if cap.recorded("waits") else pd.DataFrame()
    requests = longest_requests(cap) if cap.recorded("requests") else pd.DataFrame()
    timeline = timeline_figure(cap, waits, requests, report["threshold_ms"])  # None: nothing to draw
    weights = stack_weights(cap) if cap.recorded("waits") else pd.DataFrame()
    flame = flame_figure(weights, "Where tasks waited: kernel stacks of the waits on FUSE "
                         "writeback, width = time waited (hover a frame; scroll to zoom)")
    shown = {k: f for k, f in (("timeline", timeline), ("flame", flame)) if f is not None}
    if not shown:
        return "", "<p>nothing to draw</p>", "<p>no waits</p>"
    script, divs = components(shown)
    # Bokeh's own JavaScript inline (plots only: no widgets, tables, WebGL or MathJax)
    inline = Resources(mode="inline", components=["bokeh"])
    return (inline.render_js() + script, divs.get("timeline", "<p>nothing to draw</p>"),
            divs.get("flame", "<p>no waits</p>"))


def render_html(cap: Capture, report: dict[str, Any]) -> str:
    """The whole HTML document for ``report`` (from ``build_report``) of ``cap``."""
    questions = {q.key: q for q in QUESTIONS}
    capture = report["capture"]
    threshold = report["threshold_ms"]
    multi = len(capture["hosts"]) > 1
    scripts, timeline, flame = _figures(cap, report)
    sources = "".join(
        f"<li>{html.escape(s['host'])}: kernel {html.escape(str(s['kernel_release']))}, plan "
        f"{html.escape(str(s['plan']))}, {s['duration_s']} s, "
        f"{(s['lost_events'] or {}).get('total', 0)} events lost"
        + ("" if s["complete"] else ", INCOMPLETE")
        + "; mounts: " + html.escape(", ".join(
            f"{m.get('mountpoint')} ({m.get('fstype')}, bdi {m.get('bdi')})"
            for m in s["mounts"]) or "none") + "</li>"
        for s in capture["sources"][:20])
    more_hosts = (f"<li>... {len(capture['sources']) - 20} more hosts</li>"
                  if len(capture["sources"]) > 20 else "")
    mechanisms = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(FLAG_KINDS[k].mechanism)}</li>"
        for k in report["flag_counts"])
    path_notes = "".join(
        f"<li><b>{html.escape(p)}</b>: {html.escape(PATH_MECHANISMS.get(p, ''))}</li>"
        for p in dict.fromkeys(r["path"] for r in report["waits_by_path"]))
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>fusewb report: {html.escape(capture['path'])}</title>",
        f"<style>{_STYLE}</style>{scripts}</head><body>",
        f"<h1>fusewb report</h1><p class='meta'>{html.escape(capture['path'])}"
        + (f" &middot; {len(capture['hosts'])} hosts" if multi else "")
        + f" &middot; threshold {threshold:g} ms &middot; {html.escape(report['generator'])}</p>",
        _verdict(report["verdict"], quiet=not report["flags"]),
        _people_table(questions["host_totals"], report["host_totals"]) if multi else "",
        "<h2>Timeline</h2><p class='answers'>What waited when? A lane per connection (its FUSE "
        "requests, WRITEs dark, never answered red), per server thread (the replies it sent) "
        f"and per waiting task (up to {TASK_LANES}, its waits coloured by kernel path); below, "
        "dirty and writeback pages and WRITEs in flight. Drawn: the "
        f"{ROWS_DRAWN} longest waits and requests of each host.</p>",
        timeline,
        "<h2>Where tasks waited</h2><p class='answers'>In which kernel code did tasks wait, "
        "weighted by the time they waited (every wait; <code>fusewb export --folded</code> "
        f"writes the same stacks for flamegraph.pl, inferno or speedscope, weight = "
        f"{WEIGHT_UNIT})?</p>",
        flame,
        _people_table(questions["flags"], report["flags"], FLAG_ROWS_SHOWN),
        "".join(f"<p class='same'>not checked: {html.escape(k)} ({html.escape(v)})</p>"
                for k, v in report["not_checked"].items()),
        f"<ul>{mechanisms}</ul>" if mechanisms else "",
        _people_table(questions["waits_by_path"], report["waits_by_path"]),
        _error_note(report["waits_by_path"]),
        f"<ul>{path_notes}</ul>" if path_notes else "",
        _people_table(questions["requests_by_opcode"], report["requests_by_opcode"]),
        _error_note(report["requests_by_opcode"]),
        _people_table(questions["dirty_throttling"], report["dirty_throttling"]),
        _people_table(questions["reclaim"], report["reclaim"]),
        _people_table(questions["migration"], report["migration"]),
        _people_table(questions["unseen_waiters"], report["unseen_waiters"])
        if report["unseen_waiters"] else "",
        "<h2>What this kernel did</h2>",
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report["kernel_notes"]) + "</ul>"
        if report["kernel_notes"] else "<p>nothing to note</p>",
        "<h2>Capture</h2>",
        f"<ul>{sources}{more_hosts}</ul>",
        "".join(f"<p class='same'>{html.escape(note)}</p>" for note in report["row_notes"][:10]),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
