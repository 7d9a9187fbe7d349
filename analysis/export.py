"""``fusewb export``: a capture in another tool's format: a Perfetto timeline, or the waiting
stacks as collapsed stacks for flame graphs.

Imports only click at module level; pandas and perfetto load inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from fusewb.command import Command

__all__ = ["export"]


@click.command("export", cls=Command)
@click.argument("capture", type=click.Path(path_type=Path))
@click.option("--perfetto", "perfetto", is_flag=True,
              help="Write a Perfetto trace (open it in ui.perfetto.dev).")
@click.option("--folded", "folded", is_flag=True,
              help="Write the kernel stacks of the waits as collapsed stacks (frame;frame "
              "weight, outermost first, weight in microseconds waited) for flamegraph.pl, "
              "inferno or speedscope.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="The file to write (--folded: standard output without it).")
@click.option("--host", metavar="HOST", help="The host to export from a folder of captures.")
def export(capture: Path, perfetto: bool, folded: bool, output: Path | None,
           host: str | None) -> None:
    """Export a capture: with --perfetto, a Perfetto trace with a track per task holding its
    waits on FUSE writeback (path, stack, inode, bdi as arguments), FUSE requests per
    connection, and counters of WRITEs in flight and of dirty and writeback pages; with
    --folded, where tasks waited: one line per kernel stack, its frames outermost first joined
    by ';', then the time waited in it in microseconds (every wait: the in-kernel histograms
    plus the waits still going on). Exit 2 with one line on an unreadable capture or a bad
    option.

    \b
    Examples:
      fusewb export cap/ --perfetto -o cap.pftrace       then open cap.pftrace in ui.perfetto.dev
      fusewb export caps/ --perfetto --host web1 -o web1.pftrace
      fusewb export cap/ --folded -o waits.folded        then: flamegraph.pl waits.folded > w.svg
      fusewb export cap/ --folded | inferno-flamegraph > waits.svg
      fusewb export cap/ --folded -o waits.folded        or drop waits.folded on speedscope.app
    """
    from fusewb.contract.errors import FusewbError  # noqa: PLC0415

    if not perfetto and not folded:
        raise FusewbError("no export format given", "add --perfetto or --folded")
    if perfetto and folded:
        raise FusewbError("--perfetto and --folded write different files", "give one of them")
    from fusewb.analysis.capture import load_capture  # noqa: PLC0415

    from fusewb.analysis.perfetto import choose_host, export_perfetto  # noqa: PLC0415

    cap = load_capture(capture)
    if folded:
        if host is not None:
            choose_host(cap, host)
        from fusewb.analysis.flame import WEIGHT_UNIT, folded_text  # noqa: PLC0415

        text = folded_text(cap, host)
        if output is None:
            sys.stdout.write(text)
            return
        try:
            output.write_text(text)
        except OSError as exc:
            raise FusewbError(f"cannot write {output}: {exc.strerror}",
                              "choose a writable -o path") from None
        click.echo(f"wrote {output}: {text.count(chr(10))} kernel stacks, weight = "
                   f"{WEIGHT_UNIT}", err=True)
        return
    if output is None:
        raise FusewbError("--perfetto writes a file", "add -o cap.pftrace")
    done = export_perfetto(cap, output, host)
    click.echo(f"wrote {done.path}: {done.tasks} tasks with {done.waits} waits, {done.requests} "
               f"FUSE requests (the capture's rows; `fusewb analyze` counts every one), "
               f"{done.counters} counter tracks (host {done.host}); open it in ui.perfetto.dev",
               err=True)
