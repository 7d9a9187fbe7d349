"""Kernel symbol addresses from ``/proc/kallsyms``: where a function starts and ends.

The tracepoint plan checks that a task going to sleep is inside ``folio_wait_writeback`` by
looking for a return address in that function's address range among the first frames of its
stack; the range comes from here and goes into the BPF program as defines.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["KALLSYMS", "function_range"]

KALLSYMS = Path("/proc/kallsyms")


def function_range(*names: str, path: Path = KALLSYMS) -> tuple[int, int] | None:
    """``(start, end)`` of the first of the text symbols ``names`` that is present (end = the
    next symbol's address), read in one pass; None when none is, or addresses are hidden
    (``kptr_restrict``, not root)."""
    try:
        with path.open() as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    addresses: list[int] = []
    starts: dict[str, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) < 3 or parts[1] not in "tTwW":
            continue
        address = int(parts[0], 16)
        addresses.append(address)
        if parts[2] in names:
            starts.setdefault(parts[2], address)
    start = next((starts[n] for n in names if n in starts), None)
    if not start:
        return None
    later = [a for a in addresses if a > start]
    return (start, min(later)) if later else None
