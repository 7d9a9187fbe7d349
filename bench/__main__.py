"""``python -m bench`` (``make bench``): run the benchmark parts, print the table of ratios,
record the run in ``bench/RESULTS.md``."""

from __future__ import annotations

import datetime
import importlib
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click
from fusewb.command import Command

from fusewb.contract.errors import FusewbError

__all__ = ["main", "PARTS"]

# part name -> module with run(settings, progress) -> PartResult, in running order.
PARTS: dict[str, str] = {
    "overhead": "bench.overhead",
    "events": "bench.events",
    "analysis": "bench.analysis_speed",
    "fixture": "bench.fixture_speed",
    "stuck": "bench.stuck_speed",
    "requests": "bench.requests",
    "soak": "bench.soak",
}


def _progress(line: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {line}", err=True)


def _remove_scratch(scratch: Path) -> None:
    """Remove the scratch folder unless a mount is still inside it (never delete through one)."""
    with open("/proc/self/mounts") as mounts:
        inside = [line.split()[1] for line in mounts
                  if line.split()[1].startswith(f"{scratch}/")]
    if inside:
        raise FusewbError(f"mounts left under {scratch}: {', '.join(inside)}",
                          f"umount them, then rm -r {scratch}")
    shutil.rmtree(scratch, ignore_errors=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, cls=Command)
@click.argument("parts", nargs=-1, type=click.Choice(list(PARTS)))
@click.option("--quick", is_flag=True, help="Short runs and fewer repetitions (a smoke check).")
@click.option("--repetitions", type=click.IntRange(min=1), metavar="N",
              help="Interleaved repetitions per part (default 6, --quick 2).")
@click.option("--results", "results_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the Markdown record (default bench/RESULTS.md; "
              "--quick and single parts write nothing unless given).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Scratch folder (default: a new temporary folder, removed at the end).")
def main(parts: tuple[str, ...], quick: bool, repetitions: int | None, results_path: Path | None,
         workdir: Path | None) -> None:
    """Measure what fusewb costs: tracer overhead against perf and bpftrace, the event rate the
    tracer records without loss, analysis time and memory, the fixture against bindfs, and
    tracing FUSE requests of bindfs at ~100k/s against a bpftrace histogram script.
    Prints one table of every ratio; a full run of all parts records it in bench/RESULTS.md.

    \b
    Examples:
      sudo .venv/bin/python -m bench                  all parts (about 12 minutes)
      sudo .venv/bin/python -m bench overhead         one part
      sudo .venv/bin/python -m bench --quick          every part, short
      sudo .venv/bin/python -m bench analysis --quick --results /tmp/r.md
    """
    from bench.results import RESULTS_FILE, results_markdown, write_results
    from bench.stats import render_text
    from bench.system import Settings, ensure_tracefs, machine

    selected = list(parts) or list(PARTS)
    full_run = not parts and not quick and repetitions is None
    if results_path is None and full_run:
        results_path = RESULTS_FILE
    scratch = workdir or Path(tempfile.mkdtemp(prefix="fusewb-bench-"))
    settings = Settings(quick=quick, repetitions=repetitions or (2 if quick else 6), workdir=scratch)
    started = datetime.datetime.now(datetime.timezone.utc)
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    ensure_tracefs()
    results = []
    try:
        for name in selected:
            _progress(f"part {name}: starting")
            part_began = time.monotonic()
            part = importlib.import_module(PARTS[name]).run(settings, _progress)
            part.seconds = time.monotonic() - part_began
            results.append(part)
            _progress(f"part {name}: done in {part.seconds:.0f} s")
    finally:
        if workdir is None:
            _remove_scratch(scratch)
    seconds = time.monotonic() - began
    click.echo(render_text([row for part in results for row in part.rows]))
    click.echo(f"\n{len(selected)} part(s) in {seconds / 60:.1f} min")
    if results_path is not None:
        command = "python -m bench " + shlex.join(sys.argv[1:])
        host = machine()
        host["load average (1 min)"] = (f"{load_before:.2f} at the start, "
                                        f"{os.getloadavg()[0]:.2f} at the end")
        text = results_markdown(results, host, command.strip(), started, seconds)
        click.echo(f"recorded in {write_results(text, results_path)}")


if __name__ == "__main__":
    main()
