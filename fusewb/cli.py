"""The ``fusewb`` command line. Each sub-command lives next to the code it drives and is added here.

Sub-command modules import only click at module level, so ``fusewb --help`` stays fast; bcc,
pandas and pyfuse3 are imported inside the commands that need them.
"""

from __future__ import annotations

import importlib

import click
from fusewb.command import Group

from fusewb import __version__

__all__ = ["main", "cli"]

# (module, attribute): every command of fusewb, in the order --help lists them.
COMMANDS: list[tuple[str, str]] = [
    ("fusewb.doctor", "doctor"),
    ("fusewb.tracers.cli", "trace"),
    ("fusewb.analysis.cli", "analyze"),
    ("fusewb.analysis.export", "export"),
    ("fusewb.fixtures.cli", "fixture"),
    ("fusewb.fixtures.cli", "load"),
    ("fusewb.scenarios", "run"),
    ("fusewb.stuck", "stuck"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, cls=Group)
@click.version_option(__version__, prog_name="fusewb")
def cli() -> None:
    """Find tasks stalled behind FUSE writeback and the kernel path they waited in.

    \b
    Examples:
      fusewb doctor                         what this kernel offers, which probes fusewb uses
      fusewb fixture mount /mnt/f --latency-ms 200
      fusewb trace --mount /mnt/f --duration 30 -o cap/
      fusewb analyze cap/ --format html -o report.html
      fusewb export cap/ --perfetto -o cap.pftrace      a timeline for ui.perfetto.dev
      fusewb run msync-slow                 mount, trace, load, analyse, clean up
      fusewb stuck                          who waits on FUSE right now (no BPF)
    """


def _register() -> None:
    for module_name, attr in COMMANDS:
        cli.add_command(getattr(importlib.import_module(module_name), attr))


_register()


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
