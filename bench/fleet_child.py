"""The dask engine's analysis of a capture, writing each worker's peak RSS (bytes) as JSON: the
bench's fleet part runs it under :mod:`bench.child_rusage` to measure the client too::

    python -m bench.fleet_child CAPTURE WORKERS.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Analyse ``argv[0]`` with the dask engine (local cluster); write the peaks to ``argv[1]``."""
    from fusewb.analysis.capture import load_capture  # noqa: PLC0415
    from fusewb.analysis.report import build_report, render_json  # noqa: PLC0415
    from fusewb.analysis.scan import scan  # noqa: PLC0415

    capture, out = (sys.argv[1:] if argv is None else argv)[:2]
    cap = load_capture(capture)
    scanned = scan(cap, engine="dask")
    render_json(build_report(cap, scan=scanned))
    Path(out).write_text(json.dumps(scanned.worker_peak_rss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
