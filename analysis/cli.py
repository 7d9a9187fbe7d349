"""``fusewb analyze``: turn a capture into a text, JSON or HTML report, optionally failing CI.

Imports only click at module level; pandas and Bokeh load inside the command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click
from fusewb.command import Command
from fusewb.contract import defaults

__all__ = ["analyze", "EXIT_FLAGGED"]

EXIT_FLAGGED = 1  # --fail-on matched a raised flag


def _progress_printer() -> Callable[[str], None] | None:
    """A progress callback drawing one overwritten line on a terminal's stderr, else None."""
    if not sys.stderr.isatty():
        return None

    def show(line: str) -> None:
        click.echo(f"\r\033[K{line}", err=True, nl=False)

    return show


@click.command("analyze", cls=Command)
@click.argument("capture", type=click.Path(path_type=Path))
@click.option("--threshold-ms", type=click.FloatRange(min=0), default=defaults.THRESHOLD_MS, show_default=True,
              help="Waits and WRITEs at or over this many ms raise BLOCKED_WAIT/STALLED_REQUEST.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text",
              show_default=True, help="Report format; html needs -o.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to this file instead of standard output.")
@click.option("--fail-on", metavar="FLAG[,FLAG]",
              help="Exit 1 when any of these flags is raised (for the CI of FUSE servers).")
@click.option("--engine", type=click.Choice(["auto", "pandas", "streaming", "dask"]),
              default="auto", show_default=True,
              help="auto: streaming for captures over "
              f"{defaults.STREAMING_ABOVE_BYTES >> 20} MiB on disk, else pandas; pandas: whole "
              "tables in memory (about 12x the capture's size); streaming: part by part, about "
              "3x; dask: parts as tasks on a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS",
              help="With --engine dask: a running scheduler (tcp://HOST:8786) whose workers "
              "have fusewb and read the capture at the same path; default a local cluster.")
def analyze(capture: Path, threshold_ms: float, fmt: str, output: Path | None,
            fail_on: str | None, engine: str, scheduler: str | None) -> None:
    """Analyse a capture (or a folder of captures, one per host) and report what waited on FUSE
    writeback, in which kernel path, and the flags raised. Every format starts with the
    verdict: what happened in a few sentences, then what to do (JSON: the "verdict" key).

    Flags: BLOCKED_WAIT, RECLAIM_WAIT, MIGRATION_WAIT, SYNC_WAIT, SERVER_SELF_WAIT,
    STALLED_REQUEST, DIRTY_THROTTLE, RECLAIM_THROTTLE, INCOMPLETE_CAPTURE.
    Exit status: 0 ok, 1 a --fail-on flag was raised, 2 unreadable capture or bad option.

    \b
    Examples:
      fusewb analyze cap/                              text report on the terminal
      fusewb analyze cap/ --threshold-ms 200
      fusewb analyze cap/ --format json -o report.json
      fusewb analyze cap/ --format html -o report.html
      fusewb analyze caps/                             a folder of captures from many hosts
      fusewb analyze big-cap/                          over 64 MiB: the streaming engine
      fusewb analyze cap/ --engine pandas              force one engine
      fusewb analyze caps/ --engine dask               many hosts on a local Dask cluster
      fusewb analyze caps/ --engine dask --scheduler tcp://10.0.0.5:8786
      fusewb analyze cap/ --fail-on SERVER_SELF_WAIT,STALLED_REQUEST   gate a FUSE server's CI
    """
    from fusewb.analysis.findings import FLAG_NAMES, parse_flag_names
    from fusewb.analysis.report import render_report
    from fusewb.contract.errors import FusewbError

    try:
        gates = parse_flag_names(fail_on)
    except ValueError as exc:
        raise FusewbError(f"unknown flag in --fail-on: {exc}",
                          f"use any of {', '.join(FLAG_NAMES)}") from None
    if fmt == "html" and output is None:
        raise FusewbError("--format html writes a file", "add -o report.html")
    progress = _progress_printer()
    try:
        rendered = render_report(capture, fmt, threshold_ms, output, progress=progress,
                                 engine=engine, scheduler=scheduler)
    finally:
        if progress is not None:
            click.echo("\r\033[K", err=True, nl=False)
    if output is None:
        click.echo(rendered.text, nl=False)
    else:
        click.echo(f"fusewb analyze: wrote {fmt} report to {output} ({rendered.engine} engine)",
                   err=True)
    hit = sorted(set(gates) & rendered.raised)
    if hit:
        click.echo(f"fusewb analyze: failing because {', '.join(hit)} raised", err=True)
        sys.exit(EXIT_FLAGGED)
