"""``fusewb trace``: record waits behind FUSE writeback (and what surrounds them) into a capture.

SIGINT, SIGTERM and SIGHUP stop it cleanly (exit 0, a whole capture), SIGINT also when a shell
started it with SIGINT ignored (a background job); SIGHUP stays ignored under ``nohup``. Every
failure is one line on stderr,
``fusewb trace: <problem>; <fix>``, with exit status 2. Output that goes away while tracing (a
terminal hung up, the reader of a pipe gone) is dropped; tracing goes on.

On a terminal, stderr shows one status line rewritten in place (events, waits over the
threshold, lost events, capture size); otherwise the same text is a plain line every 5 s.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

import click
from fusewb.command import Command
from fusewb.contract import defaults

if TYPE_CHECKING:
    from fusewb.tracers.live import StatusLine
    from fusewb.tracers.session import TraceOptions

__all__ = ["trace"]


def _silence(stream: TextIO) -> None:
    """Point the file descriptor of ``stream`` at /dev/null (what is still buffered goes there)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def _echo(line: str, err: bool = False, nl: bool = True) -> None:
    """click.echo that silences a stdout or stderr gone away instead of raising."""
    try:
        click.echo(line, err=err, nl=nl)
    except OSError:  # EIO from a hung-up terminal, EPIPE from a closed pipe
        _silence(sys.stderr if err else sys.stdout)


def _status_line() -> StatusLine:
    """The status line on stderr (in place on a terminal, a plain line every 5 s otherwise)."""
    from fusewb.tracers.live import StatusLine, terminal_columns  # noqa: PLC0415

    try:
        tty = sys.stderr.isatty()
    except ValueError:  # stderr closed
        tty = False
    return StatusLine(lambda text: _echo(text, err=True, nl=False), tty,
                      lambda: terminal_columns(sys.stderr), 5.0)


def _max_size(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from fusewb.tracers.capture import MIN_MAX_SIZE  # noqa: PLC0415
    from fusewb.contract.units import format_size, parse_size  # noqa: PLC0415

    try:
        size = parse_size(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size; give bytes with an optional unit "
                                 "K, M, G or T, e.g. 500M") from None
    if size < MIN_MAX_SIZE:
        raise click.BadParameter(f"{value} is below the smallest bound, {format_size(MIN_MAX_SIZE)}; "
                                 "give at least 1M")
    return size


def _fail(problem: str) -> NoReturn:
    """The one line of a failed trace, then exit 2."""
    _echo(f"fusewb trace: {problem}", err=True)
    sys.exit(2)


def _print_ebpf(options: TraceOptions) -> None:
    """The C the same options would trace with."""
    from fusewb.tracers.features import probe_features  # noqa: PLC0415
    from fusewb.tracers.plan import choose_plan  # noqa: PLC0415
    from fusewb.tracers.program import ebpf_text  # noqa: PLC0415

    plan = choose_plan(probe_features(test_loads=False), options.plan)
    click.echo(ebpf_text(plan, options.build_options()))


@click.command(cls=Command)
@click.option("--mount", "mounts", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Trace only this FUSE mountpoint (repeatable). Default: every FUSE mount, "
              "including ones mounted while tracing.")
@click.option("--pid", type=int, metavar="PID", help="Only waits and throttling of this process (tgid).")
@click.option("--duration", type=float, metavar="SECONDS", help="Stop after this many seconds (default: Ctrl-C).")
@click.option("--threshold-ms", type=float, default=defaults.THRESHOLD_MS, show_default=True, metavar="MS",
              help="Print each wait at least this long as it happens. Requests and waits this "
              "long or longer become rows of the capture; every one, fast or slow, is counted "
              "in the in-kernel histograms (counts, sums, maxima, percentiles).")
@click.option("--all-requests", is_flag=True,
              help="Make every FUSE request a row, not only the slow ones (raw rows for your "
              "own analysis). Costly at high rates: on bindfs at ~117k requests/s (2 CPUs, "
              "make bench) it kept 0.68-0.71 of the untraced throughput where the default "
              "keeps 0.95-0.99, the tracer took 40-46% of a CPU (default 0.6%), and up to a "
              "fifth of the rows did not fit the ring buffer (lost events, counted; the histograms still count "
              "every request).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), metavar="CAPTURE_DIR",
              help="Capture directory to create (owner-only).")
@click.option("--max-size", callback=_max_size, metavar="SIZE",
              help="Keep the capture within SIZE on disk (e.g. 500M, 2G): the oldest parts are "
              "dropped and counted in meta.json. Default: unbounded, but tracing stops cleanly "
              "(exit 2) before the file system is full.")
@click.option("--ring-pages", type=int, default=defaults.RING_PAGES, hidden=True,
              help="Ring buffer size in pages (power of two); tests force overflow with 1.")
@click.option("--plan", "plan_name", type=click.Choice(["tracepoint", "kprobe"]), hidden=True,
              help="Force a probe plan.")
@click.option("--ebpf", is_flag=True, hidden=True, help="Print the BPF C program and exit.")
def trace(mounts: tuple[str, ...], pid: int | None, duration: float | None, threshold_ms: float,
          all_requests: bool, output: Path | None, max_size: int | None, ring_pages: int, plan_name: str | None,
          ebpf: bool) -> None:
    """Trace tasks that wait on FUSE writeback, with the kernel path of each wait, FUSE requests,
    dirty throttling and reclaim/migration/compaction activity, into a capture directory
    readable by pandas (see contract/schema.py). Ctrl-C, SIGTERM, SIGHUP or --duration stop it
    cleanly (exit 0). Exit 2 with one line saying why when tracing cannot start or the capture
    cannot be kept whole (file system full, I/O error, directory removed): what was written
    stays, with meta.json complete=false. Before the file system is full, tracing stops by
    itself (exit 2, the capture whole); --max-size keeps the newest data instead.

    \b
    Examples:
      sudo fusewb trace -o cap/                         every FUSE mount, until Ctrl-C
      sudo fusewb trace --mount /mnt/f --duration 30 -o cap/
      sudo fusewb trace --pid 4242 --threshold-ms 10 -o cap/
      sudo fusewb trace --max-size 2G -o cap/           hours long, the newest 2 GiB kept
      sudo fusewb trace --all-requests --duration 10 -o cap/   a row for every request
      python -c "import pandas as pd; print(pd.read_parquet('cap/waits'))"
    """
    from fusewb.tracers.session import TraceOptions, Tracer  # noqa: PLC0415

    options = TraceOptions(
        output=output, mounts=list(mounts) or None, pid=pid, duration=duration,
        threshold_ms=threshold_ms, all_requests=all_requests, ring_pages=ring_pages, plan=plan_name, max_size=max_size)
    if ebpf:
        _print_ebpf(options)
        return
    if output is None:
        raise click.UsageError("missing option '-o' / '--output' (the capture directory)")
    from fusewb.contract.errors import FusewbError  # noqa: PLC0415
    from fusewb.tracers.stopsignals import StopOnSignals  # noqa: PLC0415

    stop = threading.Event()
    status = _status_line()
    with StopOnSignals(stop) as signals:
        tracer = Tracer(dataclasses.replace(
            options,
            live=lambda line: status.print(_echo, line),
            progress=lambda line: status.print(lambda text: _echo(text, err=True), line),
            status=status.show,
        ))
        try:
            tracer.start()
            what = ", ".join(mounts) if mounts else "every FUSE mount"
            _echo(f"tracing {what} with the {tracer.plan.name} plan ({len(tracer.probes)} probes) "
                  f"into {output}; Ctrl-C to stop", err=True)
            summary = tracer.run(stop)
        except FusewbError as exc:
            status.close()
            _fail(str(exc))
        status.close()
        if signals.received:
            _echo(f"stopped by {signals.received[0]}", err=True)
        for line in summary.lines():
            _echo(line, err=True)
