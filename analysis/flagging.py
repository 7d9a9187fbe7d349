"""Raising the flags of a capture: the scan of its big tables (any engine, pandas when none is
given), then the flag declarations run on it. Above both :mod:`fusewb.analysis.scan` and
:mod:`fusewb.analysis.findings` (the declarations), which the scan reads.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from fusewb.analysis.capture import Capture
from fusewb.analysis.findings import FLAGS
from fusewb.analysis.rules import Flag, run_flags
from fusewb.analysis.scan import scan as run_scan
from fusewb.analysis.scanned import Scan
from fusewb.contract.defaults import THRESHOLD_MS

__all__ = ["flags"]


def flags(cap: Capture, threshold_ms: float = THRESHOLD_MS, scan: Scan | None = None,
          declared: Iterable[Flag] = FLAGS) -> pd.DataFrame:
    """Every flag raised by the capture, most severe and longest first.

    Columns: flag, severity (critical/high/medium/low), host, path (for wait flags and
    RECLAIM_THROTTLE, else None), pid, tgid, comm, mount, bdi, ino (waits only), duration_ms (the
    worst; total pause for DIRTY_THROTTLE, total delay for RECLAIM_THROTTLE), ongoing, count
    (events merged into the row), total_ms, evidence (stack summary or figures), mechanism.
    ``attrs["not_checked"]``: flag -> why it could not be checked on this capture. ``scan``:
    the merged partials of the big tables (:func:`fusewb.analysis.scan.scan`, by any engine;
    made with the pandas engine when not given). ``declared``: the flags to run (:data:`FLAGS`).
    """
    declared = list(declared)
    if scan is None:
        scan = run_scan(cap, threshold_ms, declared=declared)
    return run_flags(cap, threshold_ms, scan, declared)
