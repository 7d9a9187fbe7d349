"""BPF C sources (package data). :func:`source_dir` tells bcc where to find them."""

from __future__ import annotations

from pathlib import Path

__all__ = ["source_dir"]


def source_dir() -> Path:
    """The folder holding ``fusewb.h`` and the ``*.bpf.c`` probe sets."""
    return Path(__file__).resolve().parent
