"""Kernel functions from ``/proc/kallsyms``, read once per look at the kernel: which of the
functions fusewb cares about exist, the name to attach a probe to (a clone such as ``.part.0``
when the function has no body of its own), and where the wait function starts and ends.

The tracepoint plan checks that a task going to sleep is inside ``folio_wait_writeback`` by
looking for a return address in that function's address range among the first frames of its
stack; the range goes into the BPF program as defines.

Only the named functions are looked for (one regular expression over the file's text): parsing
every one of the file's 100k+ lines took most of ``fusewb trace``'s time before its compile.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KALLSYMS", "Kallsyms", "read_kallsyms"]

KALLSYMS = Path("/proc/kallsyms")
_TEXT_LINE = re.compile(r"^([0-9a-f]+) [tTwW] ", re.M)


@dataclass(frozen=True)
class Kallsyms:
    """``names``: each function asked for that is present -> the name to attach to (the
    function itself, else its first clone with a compiler suffix such as ``.isra.0``).
    ``ranges``: (start, end) of each function asked a range for that is present (end = the next
    text symbol's address); empty when addresses are hidden (``kptr_restrict``, not root)."""

    names: dict[str, str]
    ranges: dict[str, tuple[int, int]]


def _next_text_address(text: str, after: int, start: int) -> int | None:
    """The address of the first text symbol listed after offset ``after`` that lies above
    ``start`` (kallsyms lists the kernel's own symbols in address order)."""
    for line in _TEXT_LINE.finditer(text, after):
        address = int(line.group(1), 16)
        if address > start:
            return address
    return None


def read_kallsyms(functions: Iterable[str], ranges_of: Iterable[str] = (),
                  path: Path = KALLSYMS) -> Kallsyms:
    """Look ``functions`` (and ``ranges_of``) up in ``path``; an unreadable file gives no
    names and no ranges."""
    wanted = set(functions) | set(ranges_of)
    try:
        text = path.read_text()
    except OSError:
        return Kallsyms({}, {})
    if not wanted:
        return Kallsyms({}, {})
    alternatives = "|".join(re.escape(name) for name in sorted(wanted, key=len, reverse=True))
    # no "^" anchor: matching the type letter and name first is several times faster
    symbol = re.compile(rf" [tTwW] ((?:{alternatives})(?:\.[\w.]+)?)(?=\s|$)")
    names: dict[str, str] = {}
    ranges: dict[str, tuple[int, int]] = {}
    range_names = set(ranges_of)
    for match in symbol.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        address = text[line_start:match.start()]
        if not address or " " in address:  # the name was not a line's symbol field
            continue
        name = match.group(1)
        base = name.split(".", 1)[0]
        if base not in names or name == base:
            names[base] = name
        start = int(address, 16)
        if name in range_names and name not in ranges and start:
            end = _next_text_address(text, match.end(), start)
            if end is not None:
                ranges[name] = (start, end)
    return Kallsyms(names, ranges)
