"""A short soak of the real tracer: ``fusewb trace`` with its defaults on bindfs over a tmpfs,
under the bench's steady pwrite load (six writers, about 100k FUSE requests/s here) for ten runs
of 6 s back to back, sampled after each (bench/soak.py's machinery; the hour is the soak part of
``make bench``, bench/RESULTS.md).

What a minute can show: the tracer's memory does not grow with the events it has seen (its
buffers and caches are bounded), its in-kernel histograms count every request of the load (the
load's own count of pwrite calls is the independent figure), nothing is lost, and it exits 0
with a whole capture. The RSS target itself is the bench's, not asserted here."""

from __future__ import annotations

import json
import shutil

from bench.requests import fusewb_counts
from bench.soak import GROWTH_LIMIT, growth, soak
from bench.system import ensure_tracefs
from tests.support import require, require_bpf, require_fuse

INTERVALS = 10
INTERVAL_S = 6.0


def test_tracer_memory_stays_flat_and_counts_every_request_under_a_steady_load(tmp_path) -> None:
    require_fuse()
    require_bpf()
    for tool in ("bindfs", "gcc"):
        require(shutil.which(tool) is not None, f"needs {tool}")
    ensure_tracefs()
    done = soak(tmp_path, INTERVALS, INTERVAL_S, progress=print)
    samples = [(s.number, round(s.rss_mib), round(100 * s.cpu_share, 1)) for s in done.samples]
    assert done.exit_code == 0, samples
    _last, growth_x = growth(done.samples)
    assert growth_x <= GROWTH_LIMIT, f"RSS grew {growth_x:.2f}x (number, MiB, %CPU): {samples}"
    requests, rows, lost = fusewb_counts(done.capture, done.connection)
    meta = json.loads((done.capture / "meta.json").read_text())
    assert meta["complete"] is True
    assert lost == 0 and rows is not None
    # WRITE and GETXATTR per pwrite, plus each run's few LOOKUP/OPEN/FLUSH/RELEASE per writer
    assert requests is not None and done.pwrite_calls > 100_000, (requests, done.pwrite_calls)
    assert 1.99 <= requests / done.pwrite_calls <= 2.05, (requests, done.pwrite_calls)
