"""pandas analysis of fusewb captures: one function per question, each returning a DataFrame.

LISA-style::

    from fusewb.analysis import load_capture, waits, wait_paths, flags
    cap = load_capture("cap/")          # one capture, or a folder of captures (host column)
    wait_paths(cap)                      # count, mean, p50/p90/p99/max ms per kernel path
    flags(cap, threshold_ms=50)          # the findings, worst first

Questions (columns in each docstring, needed events in ``fn.REQUIRES``; a capture without them
raises ``MissingEventsError``, one line): ``waits``, ``wait_paths``, ``stack_paths``,
``unseen_waits`` (module ``waiting``); ``fuse_requests``, ``requests_by_opcode``,
``request_totals``, ``inflight_writeback`` (``requests``); ``dirty_throttling``, ``vm_events``,
``reclaim_activity``, ``migration_activity``, ``page_states``, ``page_state_peaks``, ``writeback_functions`` (``vm``);
``flags`` (``flagging``: each flag one ``Flag`` declaration in ``FLAGS`` of ``findings``,
run by the engine in ``rules`` on a ``Scan`` (``scanned``); ``report.report_needs()`` derives
what a report reads from the declarations).

Engines: ``scan(cap, engine=...)`` (module ``scan``) answers the questions on the big tables
(waits, requests) with ``pandas`` (whole tables, the default of every function above),
``streaming`` (Parquet parts batch by batch, about 3x the capture's size in memory) or ``dask``
(parts as tasks on a Dask cluster); each question is written once as a partial per slice of rows
and a combine step (module ``partials``), so the engines' answers are equal. ``flags(cap,
threshold_ms, scan)`` and ``report.build_report(cap, scan=...)`` take a scan by any engine.

Counts: in captures with in-kernel histograms (schema_version 2; module ``histograms``) rows
exist only for waits and requests from the capture's ``row_threshold_ms`` on and for those
still going on at the end, and every ``count``, mean, maximum and percentile of ``wait_paths``,
``requests_by_opcode`` and ``request_totals`` comes from the histograms (percentiles from
buckets: ``percentile_error_pct``); ``rows`` counts the rows. Older captures answer from their
rows (and request counters) as before.

Modules: ``capture`` (reading and validation only), ``histograms`` (the in-kernel histograms
per group), ``paths`` (``PATH_RULES``: the table that
maps kernel stacks to the paths reclaim, migration, sync, fsync, close, write, truncate,
page_mkwrite, other), ``report`` (text and JSON, ``render_report`` for ``fusewb run``),
``html_report`` (Bokeh: the timeline, the flame graph), ``verdict``, ``tables``, ``timeline``,
``flame`` (collapsed stacks), ``cli`` (``fusewb analyze``), ``synthetic`` (captures for tests
and benchmarks, vectorised).

The names below load lazily, so ``fusewb.analysis.cli`` (and ``fusewb --help``) need not import
pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "capture": ["Capture", "CaptureError", "MissingEventsError", "load_capture"],
    "findings": ["FLAGS", "FLAG_KINDS", "FLAG_NAMES"],
    "flagging": ["flags"],
    "rules": ["Flag", "flag_needs", "run_flags"],
    "paths": ["PATH_RULES", "PATHS", "attribute_path"],
    "requests": ["fuse_requests", "inflight_writeback", "requests_by_opcode", "request_totals"],
    "vm": ["dirty_throttling", "migration_activity", "reclaim_activity", "vm_events", "page_states",
           "page_state_peaks", "writeback_functions"],
    "waiting": ["stack_paths", "wait_paths", "waits", "unseen_waits"],
    "scan": ["ENGINES", "scan"],
    "scanned": ["Scan"],
}
# Every public name, from its home above (a table's questions live in the module its
# contract.schema.TABLE_SPECS entry names: tests/test_event_registry.py checks they are here).
__all__ = [name for names in _HOME.values() for name in names]
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
