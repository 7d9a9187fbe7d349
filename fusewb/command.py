"""Click classes for every fusewb command: a :class:`~fusewb.contract.errors.FusewbError` raised
while parsing or running becomes one line on stderr and exit code 2 (``EXIT_USAGE``).

The libraries below the command line raise ``FusewbError`` and know nothing of click; only the
command modules (``fusewb/``, and the ``cli.py`` of each package) use these classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from fusewb.contract.errors import EXIT_USAGE, FusewbError

__all__ = ["Command", "Group", "user_errors"]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a FusewbError into the ClickException that click prints on one line (exit 2)."""
    try:
        yield
    except FusewbError as exc:
        error = click.ClickException(str(exc))
        error.exit_code = EXIT_USAGE
        raise error from exc


class _UserErrors:
    """make_context (parsing, option callbacks) and invoke with FusewbErrors turned into exit 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with user_errors():
            return super().make_context(*args, **kwargs)  # type: ignore[misc]

    def invoke(self, ctx: click.Context) -> Any:
        with user_errors():
            return super().invoke(ctx)  # type: ignore[misc]


class Command(_UserErrors, click.Command):
    """A click command whose FusewbErrors (also from option callbacks) exit 2 with one line."""


class Group(_UserErrors, click.Group):
    """A click group like :class:`Command`; its sub-commands default to :class:`Command`."""

    command_class = Command
