"""Kernel functions from ``/proc/kallsyms``, read once per look at the kernel: which functions
exist and the name to attach a probe to (a clone such as ``.part.0`` when the function has no
body of its own), and where the wait function starts and ends.

The tracepoint plan checks that a task going to sleep is inside ``folio_wait_writeback`` by
looking for a return address in that function's address range among the first frames of its
stack; the range goes into the BPF program as defines.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KALLSYMS", "Kallsyms", "read_kallsyms"]

KALLSYMS = Path("/proc/kallsyms")
_TEXT = "tTwW"


@dataclass(frozen=True)
class Kallsyms:
    """``names``: every text symbol with compiler suffixes (``.isra.0``, ``.part.0``) removed ->
    the name to attach to (the function itself, else its first clone). ``ranges``: (start, end)
    of each function asked for that is present (end = the next text symbol's address); empty
    when addresses are hidden (``kptr_restrict``, not root)."""

    names: dict[str, str]
    ranges: dict[str, tuple[int, int]]


def read_kallsyms(ranges_of: Iterable[str] = (), path: Path = KALLSYMS) -> Kallsyms:
    """One pass over ``path``; an unreadable file gives no names and no ranges."""
    wanted = set(ranges_of)
    names: dict[str, str] = {}
    starts: dict[str, int] = {}
    addresses: list[int] = []
    try:
        with path.open() as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3 or parts[1] not in _TEXT:
                    continue
                name = parts[2]
                base = name.split(".", 1)[0]
                if base not in names or name == base:
                    names[base] = name
                if wanted:
                    address = int(parts[0], 16)
                    addresses.append(address)
                    if name in wanted:
                        starts.setdefault(name, address)
    except OSError:
        return Kallsyms({}, {})
    ranges = {}
    for name, start in starts.items():
        later = min((a for a in addresses if a > start), default=None) if start else None
        if later is not None:
            ranges[name] = (start, later)
    return Kallsyms(names, ranges)
