"""fusewb's tracer in a process of its own, with options ``fusewb trace`` keeps internal: the
ring buffer size (the event-rate bench shrinks it to force an overflow) beside ``--all-requests``
(every FUSE request a row, as the event-rate bench needs; without it only requests over the
threshold are rows, the others are counted in the in-kernel histograms only).

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

__all__ = ["main"]


@click.command(cls=Command)
@click.option("--mount", required=True, type=click.Path(file_okay=False), help="FUSE mountpoint.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Capture directory to create.")
@click.option("--ring-pages", type=int, default=256, show_default=True)
@click.option("--all-requests/--slow-requests", default=True, show_default=True,
              help="Every FUSE request a row, or only those over the threshold.")
def main(mount: str, output: Path, ring_pages: int, all_requests: bool) -> None:
    """Run fusewb's Tracer with bench options until SIGINT; print its summary as JSON.

    \b
    Examples:
      python -m bench.tracer_proc --mount /mnt/f -o /tmp/cap
      python -m bench.tracer_proc --mount /mnt/f -o /tmp/cap --ring-pages 1
    """
    from fusewb.tracers.session import TraceOptions, Tracer  # noqa: PLC0415
    from fusewb.tracers.stopsignals import StopOnSignals  # noqa: PLC0415

    stop = threading.Event()
    with StopOnSignals(stop):
        tracer = Tracer(TraceOptions(output=output, mounts=[mount], ring_pages=ring_pages,
                                     all_requests=all_requests))
        tracer.start()
        click.echo(f"tracing {mount} (ring {ring_pages} pages, "
                   f"{'every request' if all_requests else 'slow requests only'} a row)", err=True)
        summary = tracer.run(stop)
    json.dump({"tables": summary.tables, "lost": summary.lost, "counters": summary.counters,
               "seconds": summary.seconds}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
