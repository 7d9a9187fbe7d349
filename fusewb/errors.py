"""The one error type users see: a problem and its fix on one line, exit code 2."""

from __future__ import annotations

import click

__all__ = ["FusewbError", "EXIT_USAGE"]

EXIT_USAGE = 2


class FusewbError(click.ClickException):
    """A user-facing failure: ``problem; fix``. Click prints it on one line and exits 2."""

    exit_code = EXIT_USAGE

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)
