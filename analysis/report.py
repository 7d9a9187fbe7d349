"""Reports: one JSON-able dict built from a capture, rendered as terminal text or JSON.

The JSON schema (``REPORT_VERSION``) is stable: top-level ``verdict`` (``sentences``,
``actions``, ``text``: what happened and what to do, :mod:`fusewb.analysis.verdict`),
``report_version``, ``generator``, ``threshold_ms``, ``capture`` (path, hosts, kernel_release, plan, duration_s, complete,
``lost_events`` (int, total over hosts), sources[] with per-host detail, ``row_threshold_ms``
(requests, waits: from how long one has a row; null before the in-kernel histograms) among
them), ``histograms`` (hosts whose counts come from the in-kernel histograms,
``percentile_error_pct`` and ``error_text``, the stated error of their percentiles),
``row_notes`` (what has rows, per host), ``waits_by_path`` (per host, bdi and path: count, rows,
ongoing, mean, p50, p90, p99, max, total, percentile_error_pct, tasks, inodes),
``requests_by_opcode`` (per host, connection and opcode: the same with errors and bytes),
``request_totals`` (completed requests as the kernel counted them, with how many have rows),
``unseen_waiters`` (asleep since before tracing), ``dirty_throttling``, ``page_states`` (peak
/proc/vmstat page counts per host, ``nr_writeback_temp`` before 6.16), ``writeback_functions``
(kprobe plan: calls and latency of ``fuse_writepage(s)`` and others), ``reclaim``,
``migration``, ``flags`` (items with flag, severity, host, path, bdi, mount, pid, tgid, comm,
ino (as the kernel prints it: unsigned), duration_ms, ongoing, count, total_ms, evidence,
mechanism), ``flag_counts``,
``not_checked``, ``not_recorded`` (the events a full report reads, :func:`report_needs`, that
no probe of the capture produces), ``kernel_notes`` and ``host_totals`` (per host: waits,
ongoing_waits, requests, flags, worst_severity, lost_events).

Every count, mean, maximum and percentile of waits and requests comes from the in-kernel
histograms where the capture has them (schema_version 2), whose rows hold only the slow ones;
percentiles read from buckets are stated with :data:`~fusewb.contract.histogram.ERROR_TEXT`.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusewb import __version__
from fusewb.analysis.capture import Capture, load_capture
from fusewb.analysis.findings import FLAG_KINDS, FLAG_NAMES, FLAGS, SEVERITIES
from fusewb.analysis.flagging import flags
from fusewb.analysis.histograms import histogram_hosts, row_thresholds
from fusewb.analysis.paths import PATH_MECHANISMS
from fusewb.analysis.requests import request_totals, requests_by_opcode
from fusewb.analysis.rules import flag_needs
from fusewb.analysis.scan import BIG_TABLES
from fusewb.analysis.scan import scan as run_scan
from fusewb.analysis.scanned import Scan
from fusewb.analysis.tables import kernel_ino
from fusewb.analysis.verdict import server_names, verdict
from fusewb.analysis.vm import (
    dirty_throttling,
    migration_activity,
    page_state_peaks,
    reclaim_activity,
    writeback_functions,
)
from fusewb.analysis.waiting import stack_paths, unseen_waits, wait_paths
from fusewb.contract import defaults
from fusewb.contract.errors import FusewbError
from fusewb.contract.extras import require
from fusewb.contract.histogram import ERROR_TEXT, RELATIVE_ERROR

__all__ = ["REPORT_VERSION", "FORMATS", "REPORT_QUESTIONS", "build_report", "render_text",
           "render_json", "records", "kernel_version", "render_report", "RenderedReport",
           "report_needs", "choose_engine", "capture_bytes"]

REPORT_VERSION = 2  # 2: counts from the in-kernel histograms, rows counted apart
FORMATS = ("text", "json", "html")
FLAGS_PER_KIND = 8  # text report: rows shown per flag kind before "... N more"


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain-Python dicts (NaN/NA -> None, numpy scalars -> int/float/bool/str)."""
    out = []
    for row in frame.astype(object).to_dict("records"):
        out.append({str(k): _plain(v) for k, v in row.items()})
    return out


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else round(float(value), 3)
    return str(value)


def kernel_version(release: str | None) -> tuple[int, int] | None:
    """``"6.18.44-fc"`` -> ``(6, 18)``; None when unparsable."""
    match = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


# The questions a report answers besides its flags (wait_paths and requests_by_opcode through the
# scan, stack_paths for the paths of the waits); each declares what it needs with @requires.
REPORT_QUESTIONS = (wait_paths, stack_paths, requests_by_opcode, request_totals, unseen_waits,
                    dirty_throttling, page_state_peaks, writeback_functions, reclaim_activity,
                    migration_activity)


def report_needs() -> list[str]:
    """The tables and ``vm:<kind>`` events a full report reads, from the declarations: the
    needs of every flag (:func:`flag_needs`) and the ``REQUIRES`` of :data:`REPORT_QUESTIONS`."""
    return list(dict.fromkeys([*flag_needs(FLAGS),
                               *(n for q in REPORT_QUESTIONS for n in q.REQUIRES)]))


def _optional(cap: Capture, question: Any, *args: Any) -> list[dict[str, Any]]:
    """The rows of ``question`` when the capture recorded what it requires, else none."""
    return records(question(cap, *args)) if all(cap.recorded(n) for n in question.REQUIRES) \
        else []


def _capture_summary(cap: Capture) -> dict[str, Any]:
    sources = []
    for src in cap.sources:
        meta = src.meta
        end = src.end_ns
        sources.append({
            "host": src.host,
            "path": str(src.path),
            "kernel_release": meta.get("kernel_release"),
            "plan": meta.get("plan"),
            "fusewb_version": meta.get("fusewb_version"),
            "schema_version": meta.get("schema_version"),
            "row_threshold_ms": row_thresholds(src),
            "duration_s": round((end - src.start_ns) / 1e9, 3) if end else None,
            "complete": bool(meta.get("complete", False)),
            "lost_events": meta.get("lost_events") or {"total": 0},
            "mounts": [m for m in meta.get("mounts") or [] if isinstance(m, dict)],
            "tables": meta.get("tables") or {},
            "probes": meta.get("probes") or [],
            "counters": meta.get("counters") or {},
        })
    first = sources[0]
    durations = [s["duration_s"] for s in sources if s["duration_s"] is not None]
    return {
        "path": str(cap.path),
        "hosts": cap.hosts,
        "kernel_release": first["kernel_release"],
        "plan": first["plan"],
        "duration_s": max(durations) if durations else None,
        "complete": all(s["complete"] for s in sources),
        "lost_events": sum(src.lost_total for src in cap.sources),
        "sources": sources,
    }


def _kernel_notes(cap: Capture, paths: pd.DataFrame) -> list[str]:
    notes = []
    for src in cap.sources:
        version = kernel_version(src.meta.get("kernel_release"))
        if version is None:
            continue
        prefix = f"{src.host} ({src.meta.get('kernel_release')}): " if len(cap.sources) > 1 else ""
        mine = paths[paths["host"].astype(object) == src.host] if len(paths) else paths
        counts = mine.groupby(mine["path"].astype(object))["count"].sum().to_dict() \
            if len(mine) else {}
        if cap.recorded("vm") and cap.recorded("waits"):
            vm = cap.table("vm")
            vm = vm[(vm["host"].astype(object) == src.host) & (vm["kind"] == "shrink_inactive")]
            met = int(vm["nr_writeback"].fillna(0).sum())
            if met and not counts.get("reclaim"):
                if version >= (6, 16):
                    notes.append(
                        f"{prefix}reclaim met {met} folios under writeback (any filesystem) and "
                        "no task waited on FUSE writeback in reclaim: 6.16+ skips folios of FUSE "
                        "mappings in reclaim instead of waiting on the server"
                    )
                else:
                    notes.append(f"{prefix}reclaim met {met} folios under writeback, none of FUSE")
        if counts.get("reclaim") and version >= (6, 16):
            notes.append(f"{prefix}reclaim waited on FUSE writeback although 6.16+ should skip "
                         "such folios: check the mapping flag on this kernel")
        elif counts.get("reclaim"):
            notes.append(f"{prefix}reclaim waited on FUSE writeback, as kernels before 6.16 do "
                         "(deadlock risk if the server needs memory)")
        if counts.get("sync"):
            notes.append(f"{prefix}sync(2)/syncfs(2) waited on FUSE writeback: this kernel lacks "
                         "the fix that skips the integrity wait for FUSE")
        if counts.get("migration"):
            notes.append(f"{prefix}migration/compaction waited on FUSE writeback "
                         "(MIGRATE_SYNC; no kernel release avoids this yet)")
        if version < (6, 12) and not cap.recorded("requests"):
            notes.append(f"{prefix}no fuse:fuse_request_* tracepoints before 6.12: FUSE "
                         "requests were not traced")
    return notes


def _which(one: str, many: str, ms: float) -> str:
    return f"every {one}" if ms <= 0 else f"{many} of {ms:g} ms or more"


def _row_notes(cap: Capture, threshold_ms: float) -> list[str]:
    """Per host, which waits and requests have rows (and so flags and timelines), so that no
    one takes the rows for all of them."""
    notes = []
    for src in cap.sources:
        prefix = f"{src.host}: " if len(cap.sources) > 1 else ""
        thresholds = row_thresholds(src)
        if thresholds is None:
            notes.append(f"{prefix}captured before the in-kernel histograms (capture schema "
                         f"{src.meta.get('schema_version')}): counts and percentiles come from "
                         "the rows (requests over the event budget only in request_totals)")
            continue
        waits, requests = thresholds["waits"], thresholds["requests"]
        notes.append(f"{prefix}rows (flags, single waits and requests, timelines) exist for "
                     f"{_which('wait', 'waits', waits)}, {_which('request', 'requests', requests)}"
                     " and those still going on at the end; counts, means, maxima and "
                     "percentiles cover every one (in-kernel histograms)")
        if threshold_ms < max(waits, requests):
            notes.append(f"{prefix}the threshold {threshold_ms:g} ms is under the capture's row "
                         "threshold: waits and requests between have no row and raise no flag")
    return notes


def _histogram_summary(cap: Capture) -> dict[str, Any]:
    """The hosts whose counts come from histograms and the stated error of their percentiles."""
    hosts = [h for h in cap.hosts if h in histogram_hosts(cap)]
    return {"hosts": hosts, "percentile_error_pct": RELATIVE_ERROR * 100 if hosts else None,
            "error_text": ERROR_TEXT if hosts else None}


def _host_totals(cap: Capture, paths: pd.DataFrame, by_opcode: pd.DataFrame,
                 raised: pd.DataFrame) -> list[dict[str, Any]]:
    """Per host: waits, ongoing waits, requests (every one counted), flags raised and the worst
    severity."""
    out = []
    for src in cap.sources:
        mine = paths[paths["host"].astype(object) == src.host] if len(paths) else paths
        requests = by_opcode[by_opcode["host"].astype(object) == src.host] \
            if len(by_opcode) else by_opcode
        hit = raised[raised["host"].astype(object) == src.host] if len(raised) else raised
        severities = set(hit["severity"].astype(object)) if len(hit) else set()
        out.append({
            "host": src.host,
            "waits": int(mine["count"].sum()) if len(mine) else 0,
            "ongoing_waits": int(mine["ongoing"].sum()) if len(mine) else 0,
            "requests": int(requests["count"].sum()) if len(requests) else 0,
            "flags": len(hit),
            "worst_severity": next((s for s in SEVERITIES if s in severities), None),
            "lost_events": src.lost_total,
        })
    return out


def build_report(
    cap: Capture, threshold_ms: float = defaults.THRESHOLD_MS, progress: Callable[[str], None] | None = None,
    scan: Scan | None = None,
) -> dict[str, Any]:
    """Everything the text, JSON and HTML reports show, as plain Python data; ``scan``: the
    big tables' answers by any engine (:func:`fusewb.analysis.scan.scan`), else pandas."""

    def step(what: str) -> None:
        if progress is not None:
            progress(f"analysing: {what}")

    if scan is None:
        step("waits and requests")
        scan = run_scan(cap, threshold_ms)
    paths = scan.wait_paths
    step("flags")
    raised = flags(cap, threshold_ms, scan)
    counts = raised["flag"].astype(object).value_counts() if len(raised) else pd.Series(dtype=int)
    step("requests, throttling, reclaim and migration")
    by_opcode = scan.by_opcode if cap.recorded("requests") else scan.by_opcode.iloc[:0]
    report = {
        "report_version": REPORT_VERSION,
        "generator": f"fusewb {__version__}",
        "threshold_ms": float(threshold_ms),
        "capture": _capture_summary(cap),
        "histograms": _histogram_summary(cap),
        "row_notes": _row_notes(cap, threshold_ms),
        "waits_by_path": records(paths),
        "requests_by_opcode": records(by_opcode),
        "request_totals": _optional(cap, request_totals, scan.by_opcode),
        "unseen_waiters": records(unseen_waits(cap)),
        "dirty_throttling": _optional(cap, dirty_throttling),
        "page_states": records(page_state_peaks(cap)),
        "writeback_functions": records(writeback_functions(cap)),
        "reclaim": _optional(cap, reclaim_activity),
        "migration": _optional(cap, migration_activity),
        "flags": [{**r, "ino": kernel_ino(r["ino"])} for r in records(raised)],
        "flag_counts": {name: int(counts.get(name, 0)) for name in FLAG_NAMES if counts.get(name)},
        "not_checked": dict(raised.attrs.get("not_checked", {})),
        "not_recorded": [need for need in report_needs() if not cap.recorded(need)],
        "kernel_notes": _kernel_notes(cap, paths),
        "host_totals": _host_totals(cap, paths, by_opcode, raised),
    }
    return {"verdict": verdict(report, server_names(cap)), **report}


def render_json(report: dict[str, Any]) -> str:
    """The report as JSON (stable keys, see the module docstring)."""
    return json.dumps(report, indent=2, sort_keys=False) + "\n"


def _fmt_ms(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


_LATENCY_HEAD = "".join(f"{name:>9}" for name in ("mean ms", "p50 ms", "p90 ms", "p99 ms",
                                                   "max ms"))


def _latencies(row: dict[str, Any]) -> str:
    return "".join(f"{_fmt_ms(row[c]):>9}" for c in ("mean_ms", "p50_ms", "p90_ms", "p99_ms",
                                                     "max_ms"))


def _error_line(rows: list[dict[str, Any]]) -> list[str]:
    """The stated error under a table whose percentiles (some of them) come from buckets."""
    if any(row.get("percentile_error_pct") for row in rows):
        return [f"  {ERROR_TEXT} (max exact)"]
    return []


def _task(item: dict[str, Any]) -> str:
    if item.get("pid") is None:
        return ""
    return f"{item.get('comm') or '?'}[{item['pid']}]"


def _where(item: dict[str, Any]) -> str:
    if item.get("bdi") is None:
        return ""
    where = f"{item.get('mount') or '?'} (bdi {item['bdi']})"
    if item.get("ino") is not None:
        where += f" ino {item['ino']}"
    return where


def _verdict_lines(said: dict[str, Any]) -> list[str]:
    """The verdict wrapped for a terminal, then what to do."""
    lines = ["Verdict"]
    lines.extend(textwrap.wrap(said["text"], 100, initial_indent="  ", subsequent_indent="  "))
    if said["actions"]:
        lines.append("What to do")
        for action in said["actions"]:
            lines.extend(textwrap.wrap(action, 100, initial_indent="  - ",
                                       subsequent_indent="    "))
    return lines


def render_text(report: dict[str, Any], flags_per_kind: int = FLAGS_PER_KIND) -> str:
    """A terminal report: capture summary, waits per path, requests, flags, mechanisms, notes."""
    cap = report["capture"]
    multi = len(cap["hosts"]) > 1
    width = max(len(h) for h in cap["hosts"]) + 2 if multi else 0

    def host(name: str) -> str:
        return f"{name:<{width}}" if multi else ""
    lines = [f"fusewb analysis of {cap['path']}"
             + (f" ({len(cap['hosts'])} hosts)" if multi else ""), ""]
    lines.extend(_verdict_lines(report["verdict"]))
    lines.append("")
    lines.append("Capture")
    for src in cap["sources"]:
        lost = (src["lost_events"] or {}).get("total", 0)
        duration = f"{src['duration_s']:.1f} s" if src["duration_s"] is not None else "unknown"
        lines.append(
            f"  host {src['host']}  kernel {src['kernel_release']}  plan {src['plan']}  "
            f"duration {duration}  lost events {lost}"
            f"{'' if src['complete'] else '  INCOMPLETE (tracer did not stop cleanly)'}"
        )
        for m in src["mounts"]:
            ratio = f", max_ratio {m.get('max_ratio')}%" if m.get("max_ratio") is not None else ""
            lines.append(f"    mount {m.get('mountpoint')}  bdi {m.get('bdi')}  "
                         f"{m.get('fstype')}{ratio}")
    if multi:
        lines.append("")
        lines.append("Totals per host")
        lines.append(f"  {host('host')}{'waits':>9}{'ongoing':>9}{'requests':>10}{'flags':>7}"
                     f"{'lost':>8}  worst")
        for row in report.get("host_totals", []):
            lines.append(f"  {host(row['host'])}{row['waits']:>9}{row['ongoing_waits']:>9}"
                         f"{row['requests']:>10}{row['flags']:>7}{row['lost_events']:>8}  "
                         f"{row['worst_severity'] or '-'}")
    if report.get("row_notes"):
        lines.append("")
        lines.extend(f"  {note}" for note in report["row_notes"])
    lines.append("")
    lines.append("Waits on FUSE writeback, per path")
    if report["waits_by_path"]:
        lines.append(f"  {host('host')}{'path':<13}{'count':>8}{'rows':>7}{'ongoing':>8}"
                     f"{_LATENCY_HEAD}{'tasks':>7}  mount")
        for row in report["waits_by_path"]:
            lines.append(
                f"  {host(row['host'])}{row['path']:<13}{row['count']:>8}{row['rows']:>7}"
                f"{row['ongoing']:>8}{_latencies(row)}{row['tasks']:>7}  {row['mount']}"
            )
        lines.extend(_error_line(report["waits_by_path"]))
    else:
        lines.append("  none")
    if report["requests_by_opcode"]:
        lines.append("")
        lines.append("FUSE requests, per opcode (most time first)")
        lines.append(f"  {host('host')}{'opcode':<12}{'count':>9}{'rows':>7}{'ongoing':>8}"
                     f"{'errors':>7}{_LATENCY_HEAD}  mount")
        for row in report["requests_by_opcode"][:8]:
            lines.append(
                f"  {host(row['host'])}{row['opcode_name']:<12}{row['count']:>9}{row['rows']:>7}"
                f"{row['ongoing']:>8}{row['errors']:>7}{_latencies(row)}  {row['mount']}"
            )
        lines.extend(_error_line(report["requests_by_opcode"][:8]))
    counted_only = [r for r in report["request_totals"] if r["counted_only"]]
    if counted_only:
        lines.append("  completed requests without a row, counted in the kernel: "
                     + ", ".join(f"{host(r['host'])}{r['opcode_name']} {r['counted_only']} of "
                                 f"{r['count']} (mean {_fmt_ms(r['mean_ms'])} ms)"
                                 for r in counted_only[:6]))
    if report.get("page_states") or report.get("writeback_functions"):
        lines.append("")
        lines.append("Page cache and writeback functions during the capture")
    for row in report.get("page_states") or []:
        counts = [f"{name} {row[f'{name}_max']}" for name in ("nr_dirty", "nr_writeback", "nr_writeback_temp")
                  if row.get(f"{name}_max") is not None]
        lines.append(f"  {host(row['host'])}/proc/vmstat peaks (pages, {row['samples']} samples): "
                     + ", ".join(counts) + ("" if row.get("nr_writeback_temp_max") is not None
                                            else "; no nr_writeback_temp (no FUSE temp pages, 6.16+)"))
    for row in report.get("writeback_functions") or []:
        lines.append(f"  {host(row['host'])}{row['function']}: {row['count']} calls, mean "
                     f"{_fmt_ms(row['mean_ms'])} ms, max {_fmt_ms(row['max_ms'])} ms")
    if report["unseen_waiters"]:
        lines.append("")
        lines.append("Asleep in writeback since before tracing began (from /proc; bdi unknown)")
        for row in report["unseen_waiters"][:FLAGS_PER_KIND]:
            fuse = "FUSE" if row["fuse"] else "fs?"
            lines.append(f"  {host(row['host'])}{row['comm']}[{row['pid']}]  {row['path']}  "
                         f"{fuse}  >= {_fmt_ms(row['duration_ms'])} ms: {row['stack']}")
        if len(report["unseen_waiters"]) > FLAGS_PER_KIND:
            lines.append(f"  ... {len(report['unseen_waiters']) - FLAGS_PER_KIND} more")
    lines.append("")
    items = report["flags"]
    summary = ", ".join(f"{n} {k}" for k, n in report["flag_counts"].items())
    lines.append(f"Flags (threshold {report['threshold_ms']:g} ms): {summary or 'none'}")
    for name in FLAG_NAMES:
        mine = [f for f in items if f["flag"] == name]
        if not mine:
            continue
        lines.append(f"{name} ({len(mine)}): {FLAG_KINDS[name].raised_when}")
        for item in mine[:flags_per_kind]:
            fields = [f"{item['severity']:<8}", item["host"] if multi else "", _task(item),
                      _where(item)]
            if item["duration_ms"] is not None:
                fields.append(f"{_fmt_ms(item['duration_ms'])} ms")
            if item["ongoing"]:
                fields.append("ONGOING")
            if len([f for f in fields if f]) == 1:  # not about a task: the evidence says it all
                fields += [item["host"] if not multi else "", item["evidence"]]
                lines.append("  " + "  ".join(f for f in fields if f))
                continue
            lines.append("  " + "  ".join(f for f in fields if f))
            lines.append(f"      {item['evidence']}")
        if len(mine) > flags_per_kind:
            lines.append(f"  ... {len(mine) - flags_per_kind} more")
        lines.append(f"  why: {FLAG_KINDS[name].mechanism}")
    for name, why in report["not_checked"].items():
        lines.append(f"not checked: {name} ({why})")
    if report.get("not_recorded"):
        lines.append("events this capture did not record (its plan attached no probe for them): "
                     + ", ".join(report["not_recorded"]))
    raised_paths = {r["path"] for r in report["waits_by_path"]}
    if raised_paths:
        lines.append("")
        lines.append("Kernel mechanisms of the paths seen")
        for path, mechanism in PATH_MECHANISMS.items():
            if path in raised_paths:
                lines.append(f"  {path}: {mechanism}")
    if report["kernel_notes"]:
        lines.append("")
        lines.append("What this kernel did")
        lines.extend(f"  - {note}" for note in report["kernel_notes"])
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RenderedReport:
    """What :func:`render_report` produced: the report data, its rendering, the flags raised,
    the engine that read the capture."""

    report: dict[str, Any]
    text: str
    raised: frozenset[str]
    output: Path | None
    engine: str


def capture_bytes(cap: Capture) -> int:
    """Bytes on disk of the big tables' parts (``BIG_TABLES``: waits, requests) of every host of ``cap``."""
    return sum(part.stat().st_size for src in cap.sources for table in BIG_TABLES
               for part in src.table_files(table))


def choose_engine(cap: Capture, engine: str = "auto") -> str:
    """``engine`` unless it is ``auto``: then ``streaming`` for captures whose big tables take
    more than :data:`~fusewb.contract.defaults.STREAMING_ABOVE_BYTES` on disk (bounded memory),
    else ``pandas``."""
    if engine != "auto":
        return engine
    return "streaming" if capture_bytes(cap) > defaults.STREAMING_ABOVE_BYTES else "pandas"


def render_report(
    capture_path: str | Path,
    fmt: str = "text",
    threshold_ms: float = defaults.THRESHOLD_MS,
    out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    engine: str = "auto",
    scheduler: str | None = None,
) -> RenderedReport:
    """Analyse ``capture_path`` with ``engine`` (see :mod:`fusewb.analysis.scan`; ``auto``:
    :func:`choose_engine`; ``scheduler``: a Dask scheduler's address) and render it as ``fmt``
    (text, json or html) into ``out``.

    With ``out`` the rendering is written there (html needs it); without, it is only returned.
    Raises ``FusewbError`` subclasses (one line, exit 2) for unreadable captures.
    """
    if fmt not in FORMATS:
        raise FusewbError(f"unknown report format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if scheduler and engine != "dask":
        raise FusewbError("--scheduler is for the dask engine", "add --engine dask")
    if fmt == "html":
        require("report")  # before the analysis, not after it
    cap = load_capture(capture_path, progress=progress)
    engine = choose_engine(cap, engine)
    # every table is read now (pandas) or part by part: a corrupt one fails here, on one line
    scanned = run_scan(cap, threshold_ms, engine, scheduler, progress)
    report = build_report(cap, threshold_ms, progress, scanned)
    if fmt == "json":
        text = render_json(report)
    elif fmt == "html":
        from fusewb.analysis.html_report import render_html

        if progress is not None:
            progress("plotting")
        text = render_html(cap, report)
    else:
        text = render_text(report)
    target = Path(out) if out is not None else None
    if target is not None:
        try:
            target.write_text(text)
        except OSError as exc:
            raise FusewbError(f"cannot write {target}: {exc.strerror}",
                              "choose a writable -o path") from None
    raised = frozenset(str(item["flag"]) for item in report["flags"])
    return RenderedReport(report=report, text=text, raised=raised, output=target, engine=engine)
