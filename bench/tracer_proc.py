"""fusewb's tracer in a process of its own, with options ``fusewb trace`` keeps internal: the
ring buffer size and the per-CPU budget of streamed request events (the event-rate bench lifts
the budget so every request is streamed, and shrinks the ring to force an overflow).

Prints ``tracing ...`` on stderr once attached, traces until SIGINT/SIGTERM, then prints the
session summary as one JSON object on stdout::

    python -m bench.tracer_proc --mount /mnt/f -o cap/ --ring-pages 1
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import click
from fusewb.command import Command
from fusewb.contract.defaults import REQUEST_EVENTS_PER_SEC

__all__ = ["main"]


@click.command(cls=Command)
@click.option("--mount", required=True, type=click.Path(file_okay=False), help="FUSE mountpoint.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Capture directory to create.")
@click.option("--ring-pages", type=int, default=256, show_default=True)
@click.option("--request-events-per-sec", type=int, default=REQUEST_EVENTS_PER_SEC, show_default=True,
              help="Per-CPU budget of streamed request events.")
def main(mount: str, output: Path, ring_pages: int, request_events_per_sec: int) -> None:
    """Run fusewb's Tracer with bench options until SIGINT; print its summary as JSON.

    \b
    Examples:
      python -m bench.tracer_proc --mount /mnt/f -o /tmp/cap --request-events-per-sec 100000000
      python -m bench.tracer_proc --mount /mnt/f -o /tmp/cap --ring-pages 1
    """
    from fusewb.tracers.session import TraceOptions, Tracer  # noqa: PLC0415
    from fusewb.tracers.stopsignals import StopOnSignals  # noqa: PLC0415

    stop = threading.Event()
    with StopOnSignals(stop):
        tracer = Tracer(TraceOptions(output=output, mounts=[mount], ring_pages=ring_pages,
                                     request_events_per_sec=request_events_per_sec,
                                     threshold_ms=1e12))
        tracer.start()
        click.echo(f"tracing {mount} (ring {ring_pages} pages, request budget "
                   f"{request_events_per_sec}/s per CPU)", err=True)
        summary = tracer.run(stop)
    json.dump({"tables": summary.tables, "lost": summary.lost, "counters": summary.counters,
               "seconds": summary.seconds}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
