"""fusewb's benchmarks (issue 7): ``python -m bench`` / ``make bench``.

Parts, each ``run(settings, progress) -> PartResult``: :mod:`bench.overhead` (tracer overhead
against perf and bpftrace), :mod:`bench.events` (event rate recorded without loss, forced
overflow), :mod:`bench.analysis_speed` (``fusewb analyze`` time and memory on 1M/10M-event
captures), :mod:`bench.fixture_speed` (the pyfuse3 fixture against bindfs), :mod:`bench.stuck_speed`
(``fusewb stuck`` on a busy machine), :mod:`bench.requests` (tracing FUSE requests of bindfs at
~100k/s against a bpftrace histogram script, also with 1% slow requests). Shared pieces:
:mod:`bench.stats` (interleaving, medians, the table), :mod:`bench.workloads`,
:mod:`bench.peers` (tracers in subprocesses), :mod:`bench.system`, :mod:`bench.results`.
"""

__all__: list[str] = []
