"""``fusewb trace``: record waits behind FUSE writeback (and what surrounds them) into a capture."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

__all__ = ["trace"]


def _print_ebpf(plan_name: str | None, ring_pages: int, pid: int | None) -> None:
    from fusewb.tracers.features import probe_features  # noqa: PLC0415
    from fusewb.tracers.plan import choose_plan  # noqa: PLC0415
    from fusewb.tracers.program import BuildOptions, ebpf_text  # noqa: PLC0415

    plan = choose_plan(probe_features(test_loads=False), plan_name)
    click.echo(ebpf_text(plan, BuildOptions(ring_pages=ring_pages, filter_tgid=pid or 0)))


@click.command()
@click.option("--mount", "mounts", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Trace only this FUSE mountpoint (repeatable). Default: every FUSE mount, "
              "including ones mounted while tracing.")
@click.option("--pid", type=int, metavar="PID", help="Only waits and throttling of this process (tgid).")
@click.option("--duration", type=float, metavar="SECONDS", help="Stop after this many seconds (default: Ctrl-C).")
@click.option("--threshold-ms", type=float, default=50.0, show_default=True, metavar="MS",
              help="Print each wait at least this long as it happens.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), metavar="CAPTURE_DIR",
              help="Capture directory to create (owner-only).")
@click.option("--ring-pages", type=int, default=4096, hidden=True,  # program.DEFAULT_RING_PAGES
              help="Ring buffer size in pages (power of two); tests force overflow with 1.")
@click.option("--plan", "plan_name", type=click.Choice(["tracepoint", "kprobe"]), hidden=True,
              help="Force a probe plan.")
@click.option("--ebpf", is_flag=True, hidden=True, help="Print the BPF C program and exit.")
def trace(mounts: tuple[str, ...], pid: int | None, duration: float | None, threshold_ms: float,
          output: Path | None, ring_pages: int, plan_name: str | None, ebpf: bool) -> None:
    """Trace tasks that wait on FUSE writeback, with the kernel path of each wait, FUSE requests,
    dirty throttling and reclaim/migration/compaction activity, into a capture directory
    readable by pandas (see fusewb/schema.py). Ctrl-C, SIGTERM or --duration stop it cleanly.

    \b
    Examples:
      sudo fusewb trace -o cap/                         every FUSE mount, until Ctrl-C
      sudo fusewb trace --mount /mnt/f --duration 30 -o cap/
      sudo fusewb trace --pid 4242 --threshold-ms 10 -o cap/
      python -c "import pandas as pd; print(pd.read_parquet('cap/waits'))"
    """
    if ebpf:
        _print_ebpf(plan_name, ring_pages, pid)
        return
    if output is None:
        raise click.UsageError("missing option '-o' / '--output' (the capture directory)")
    from fusewb.tracers.session import TraceOptions, Tracer  # noqa: PLC0415

    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        tracer = Tracer(TraceOptions(
            output=output, mounts=list(mounts) or None, pid=pid, duration=duration,
            threshold_ms=threshold_ms, ring_pages=ring_pages, plan=plan_name,
            live=lambda line: click.echo(line),
            progress=lambda line: click.echo(line, err=True),
        ))
        tracer.start()
        what = ", ".join(mounts) if mounts else "every FUSE mount"
        click.echo(f"tracing {what} with the {tracer.plan.name} plan ({len(tracer.probes)} probes) "
                   f"into {output}; Ctrl-C to stop", err=True)
        summary = tracer.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for line in summary.lines():
        click.echo(line, err=True)
    sys.stdout.flush()
