"""Units: sizes in bytes, read from and written for people (binary units), and the
nanoseconds of the capture's times in milliseconds."""

from __future__ import annotations

__all__ = ["parse_size", "format_size", "NS_PER_MS"]

NS_PER_MS = 1_000_000  # capture times and durations are nanoseconds; reports speak milliseconds

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes in ``text``: a number with an optional binary unit K, M, G or T (``500M``, ``2G``,
    ``1.5GiB``); ValueError when it is not one."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS and value[-1:] else ""
    number = float(value[: len(value) - len(unit)])  # ValueError for junk
    if not number >= 0 or number == float("inf"):
        raise ValueError(text)
    return int(number * _SIZE_UNITS[unit])


def format_size(count: int) -> str:
    """``count`` bytes for people: ``3.2 MiB``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.1f} {unit}"
    return f"{count} bytes"
