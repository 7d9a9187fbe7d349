"""Defaults and limits, one place for each: the command line's defaults, the BPF program's
compile-time sizes (:class:`fusewb.tracers.program.BuildOptions` turns them into ``-D``
defines; the BPF sources have no defaults of their own), and the analysis's severities.
"""

from __future__ import annotations

import errno

__all__ = [
    "THRESHOLD_MS", "RING_PAGES", "MAX_PENDING", "MAX_INFLIGHT", "STACK_ENTRIES",
    "REQUEST_SLOTS", "REQ_HIST_ENTRIES", "WAIT_HIST_ENTRIES", "FILTER_ENTRIES",
    "SERVER_THREAD_ENTRIES", "INFLIGHT_CONN_ENTRIES", "HIGH_SEVERITY_MS", "high_severity_ms",
    "MEDIUM_THROTTLE_MS", "KERNEL_ENDED_ERRORS", "STREAMING_ABOVE_BYTES",
]

# A wait or request at or over this is reported (fusewb trace's live view, analyze, run) and
# becomes a row of the capture; every one, fast or slow, is counted in the in-kernel histograms.
THRESHOLD_MS = 50.0

# Ring buffer size: 16 MiB. The ring is drained every 100 ms and not while a second's Parquet
# parts are written (~0.2-0.3 s per 100,000 rows), so at 100,000 events/s it must hold some
# 40,000 events (~4 MiB); 1 MiB lost events from ~50,000/s (bench/RESULTS.md, events part).
RING_PAGES = 4096

# BPF map sizes (the tracer's kernel memory bound).
MAX_PENDING = 16384  # waits and requests begun and not yet ended
MAX_INFLIGHT = 65536  # requests in flight without a slot (below), per connection sums
REQUEST_SLOTS = 16384  # requests in flight by unique (a power of two): the cheap way in
STACK_ENTRIES = 4096  # distinct kernel stacks
# Histogram entries (per-CPU): (connection, opcode, bucket) of requests, (bdi, stack, bucket) of
# waits. A busy connection fills some 40 buckets per opcode.
REQ_HIST_ENTRIES = 8192
WAIT_HIST_ENTRIES = 4096
FILTER_ENTRIES = 1024  # FUSE bdis and FUSE connections in the filter (one entry per mount)
SERVER_THREAD_ENTRIES = 4096  # server threads that read or answered requests, per connection
INFLIGHT_CONN_ENTRIES = 1024  # connections with WRITEs in flight counted

# fusewb analyze without --engine: captures whose tables take more than this on disk are read
# part by part (streaming engine, about 3x the capture's size in memory) instead of whole
# (pandas, about 12x; bench/RESULTS.md, analysis part). 64 MiB: some 3M events.
STREAMING_ABOVE_BYTES = 64 << 20

# A wait or stalled request is "high" from this long, or from ten thresholds when that is more.
HIGH_SEVERITY_MS = 1000.0


def high_severity_ms(threshold_ms: float) -> float:
    """Where medium ends and high begins for a wait or a stalled request."""
    return max(HIGH_SEVERITY_MS, 10 * threshold_ms)


# Total throttling (dirty pauses, reclaim delays) is high from HIGH_SEVERITY_MS and, for
# DIRTY_THROTTLE, medium from this (low below).
MEDIUM_THROTTLE_MS = 100.0


# Request ends the kernel makes itself (an aborted or unmounted connection), not a server's reply.
KERNEL_ENDED_ERRORS = (-errno.ECONNABORTED, -errno.ENOTCONN)
