"""``fusewb export``: a capture in another tool's format (today: a Perfetto timeline).

Imports only click at module level; pandas and perfetto load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click
from fusewb.command import Command

__all__ = ["export"]


@click.command("export", cls=Command)
@click.argument("capture", type=click.Path(path_type=Path))
@click.option("--perfetto", "perfetto", is_flag=True,
              help="Write a Perfetto trace (open it in ui.perfetto.dev).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              metavar="FILE", help="The file to write.")
@click.option("--host", metavar="HOST", help="The host to export from a folder of captures.")
def export(capture: Path, perfetto: bool, output: Path, host: str | None) -> None:
    """Export a capture as a timeline: with --perfetto, a Perfetto trace with a track per task
    holding its waits on FUSE writeback (path, stack, inode, bdi as arguments), FUSE requests
    per connection, and counters of WRITEs in flight and of dirty and writeback pages.
    Exit 2 with one line on an unreadable capture or a bad option.

    \b
    Examples:
      fusewb export cap/ --perfetto -o cap.pftrace       then open cap.pftrace in ui.perfetto.dev
      fusewb export caps/ --perfetto --host web1 -o web1.pftrace
    """
    from fusewb.contract.errors import FusewbError  # noqa: PLC0415

    if not perfetto:
        raise FusewbError("no export format given", "add --perfetto")
    from fusewb.analysis.capture import load_capture  # noqa: PLC0415
    from fusewb.analysis.perfetto import export_perfetto  # noqa: PLC0415

    done = export_perfetto(load_capture(capture), output, host)
    click.echo(f"wrote {done.path}: {done.tasks} tasks with {done.waits} waits, {done.requests} "
               f"FUSE requests (the capture's rows; `fusewb analyze` counts every one), "
               f"{done.counters} counter tracks (host {done.host}); open it in ui.perfetto.dev",
               err=True)
