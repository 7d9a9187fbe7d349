"""pandas analysis of fusewb captures: one function per question, each returning a DataFrame.

LISA-style: ``cap = load_capture(path)`` (one capture, or a folder of captures with a ``host``
column), then ``waits(cap)``, ``wait_paths(cap)``, ``requests_by_opcode(cap)``,
``inflight_writeback(cap, bin_ms)``, ``dirty_throttling(cap)``, ``reclaim_activity(cap)``,
``migration_activity(cap)`` and ``flags(cap, threshold_ms)``. Each question lists its columns in
its docstring and the events it needs in ``REQUIRES``.

The names below load lazily, so ``fusewb.analysis.cli`` (and ``fusewb --help``) need not import
pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Capture", "CaptureError", "MissingEventsError", "load_capture",
    "FLAG_KINDS", "FLAG_NAMES", "flags",
    "PATH_RULES", "PATHS", "attribute_path",
    "fuse_requests", "inflight_writeback", "requests_by_opcode",
    "dirty_throttling", "migration_activity", "reclaim_activity", "vm_events",
    "stack_paths", "wait_paths", "waits",
]

_HOME = {
    "capture": ["Capture", "CaptureError", "MissingEventsError", "load_capture"],
    "findings": ["FLAG_KINDS", "FLAG_NAMES", "flags"],
    "paths": ["PATH_RULES", "PATHS", "attribute_path"],
    "requests": ["fuse_requests", "inflight_writeback", "requests_by_opcode"],
    "vm": ["dirty_throttling", "migration_activity", "reclaim_activity", "vm_events"],
    "waiting": ["stack_paths", "wait_paths", "waits"],
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
