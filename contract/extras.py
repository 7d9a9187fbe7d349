"""What fusewb needs beyond its core install, and the one line that says how to get it.

The core install (``pip install fusewb``: click, pandas, pyarrow) runs ``fusewb trace``,
``stuck``, ``doctor`` and ``analyze`` (text and JSON). bcc is not on PyPI: it comes from the
distribution (:data:`BCC_PACKAGES`), as do the kernel headers it compiles against
(:data:`HEADERS_FIX`). Everything else is an extra of pyproject.toml, declared here once with the
top-level modules it provides; :func:`require` turns a missing one into ``FusewbError`` (one
line, exit 2) at the place that needs it, and the tests block these modules to prove the core
commands import none of them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from fusewb.contract.errors import FusewbError

__all__ = ["BCC_PACKAGES", "EXTRAS", "Extra", "HEADERS_FIX", "missing_bcc", "require"]

# The distribution packages that provide bcc's Python module, as "command (distributions)".
BCC_PACKAGES = ("apt-get install python3-bpfcc (Debian, Ubuntu)",
                "dnf install python3-bcc (Fedora, RHEL)",
                "pacman -S python-bcc (Arch)")
# How a host gets the kernel headers bcc compiles against (tracers/headers.py finds them).
HEADERS_FIX = ("install the running kernel's headers: apt-get install linux-headers-$(uname -r) "
               "(Debian, Ubuntu), dnf install kernel-devel-$(uname -r) (Fedora, RHEL), "
               "or modprobe kheaders where the kernel has it")


@dataclass(frozen=True)
class Extra:
    """An optional dependency group: its name in pyproject.toml, the top-level modules it
    provides, and what needs them (the plural subject of "... need the 'NAME' extra")."""

    name: str
    modules: tuple[str, ...]
    needed_by: str


EXTRAS: dict[str, Extra] = {extra.name: extra for extra in (
    Extra("fixture", ("pyfuse3", "trio"), "fixture mounts (fusewb fixture mount, fusewb run)"),
    Extra("report", ("bokeh",), "HTML reports (--format html)"),
    Extra("dask", ("dask", "distributed"), "Dask analyses (--engine dask)"),
    Extra("perfetto", ("perfetto",), "Perfetto exports (fusewb export --perfetto)"),
)}


def require(name: str) -> None:
    """Import the modules of extra ``name``; FusewbError naming the extra when one is missing."""
    extra = EXTRAS[name]
    for module in extra.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise FusewbError(f"{extra.needed_by} need the '{name}' extra ({exc})",
                              f"pip install 'fusewb[{name}]'") from None


def missing_bcc(error: ImportError) -> FusewbError:
    """The one line for a Python that cannot import bcc (``error``: what the import said)."""
    return FusewbError(f"bcc is not importable ({error})",
                       "install the distribution's bcc: " + "; ".join(BCC_PACKAGES)
                       + " (in a virtualenv: create it with --system-site-packages)")
