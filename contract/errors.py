"""The one error type fusewb raises for users: a problem and its fix on one line.

Every layer (tracers, analysis, fixtures) raises :class:`FusewbError`; it does not depend on
click, so the pandas API raises it as it is. The command line (:mod:`fusewb.command`) prints it on
one line and exits with :data:`EXIT_USAGE`.
"""

from __future__ import annotations

__all__ = ["EXIT_USAGE", "FusewbError"]

EXIT_USAGE = 2


class FusewbError(Exception):
    """A user-facing failure: ``problem; fix``."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)
