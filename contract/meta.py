"""The shape of a capture's ``meta.json``, declared once: each key with the JSON type readers
check, what it means, and its value in a new capture.

From :data:`META` follow the documentation (:data:`META_KEYS`), the tracer's first
``meta.json`` and the synthetic captures' (:func:`initial_meta`), and the reader's type checks
(:data:`META_SPEC`, used by :mod:`fusewb.analysis.capture`).

A spec is ``int``, ``str``, ``float`` or ``bool``, ``[spec]`` for a list of such items,
``{key: spec}`` for those keys of an object (null: the key is absent) and ``{"*": spec}`` for
every value of an object; None: not checked by readers. Integers must fit in 64 bits.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from fusewb import __version__
from fusewb.contract import defaults

__all__ = ["MetaKey", "META", "META_KEYS", "META_SPEC", "REQUIRED", "LATER", "initial_meta",
           "MISSED_TOTAL", "missed_counters", "missed_by_program", "missed_text"]

Spec = type | list[Any] | dict[str, Any]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


REQUIRED = _Marker("REQUIRED")  # no default: whoever starts a capture gives it
LATER = _Marker("LATER")  # not in a new capture: the capture writer adds it, at a flush or the end


@dataclass(frozen=True)
class MetaKey:
    """One key of ``meta.json``."""

    key: str
    spec: Spec | None  # what readers check (None: nothing)
    description: str
    default: Any = REQUIRED  # the value in a new capture, REQUIRED or LATER


_LOST_NONE = {"total": 0, "per_cpu": [], "by_kind": {}}

META: tuple[MetaKey, ...] = (
    MetaKey("schema_version", None, "int, SCHEMA_VERSION of the writer; readers refuse newer ones "
            "(checked on its own, before the others)", LATER),
    MetaKey("fusewb_version", None, "str", __version__),
    MetaKey("host", str, "str, hostname"),
    MetaKey("kernel_release", str, "str, uname -r"),
    MetaKey("plan", str, "str, probe plan name: 'tracepoint' or 'kprobe'"),
    MetaKey("probes", [str], "list[str], every probe attached, e.g. "
            "'tracepoint:writeback:folio_wait_writeback'", []),
    MetaKey("absent_columns", None, "dict[str,list[str]]: table -> columns the traced kernel's "
            "tracepoints do not provide (null in every row); {} when none; missing in captures "
            "written before it", {}),
    MetaKey("mounts", [{"mountpoint": str, "fstype": str, "bdi": str, "connection": int}],
            "list[dict], FuseMount.as_dict(): mountpoint, fstype, source, major, minor, bdi, "
            "connection, max_ratio, strict_limit (every FUSE mount seen during the capture)", []),
    MetaKey("filter", None, "dict: mounts (list of mountpoints or null for all), pid (int or null)",
            {"mounts": None, "pid": None}),
    MetaKey("threshold_ms", None, "float, live-view threshold", defaults.THRESHOLD_MS),
    MetaKey("row_threshold_ms", {"requests": float, "waits": float},
            "dict: requests (float) and waits (float): from how long (ms) one became a row; "
            "faster ones are only in the histograms (0: every one is a row); missing in "
            "captures written before the histograms (schema_version 1), whose rows are all "
            "there were, less the fast requests over the per-CPU event budget", LATER),
    MetaKey("histograms", {"sub_bits": int, "max_msb": int,
                           "requests": [{"connection": int, "opcode": int, "opcode_name": str,
                                         "count": int, "errors": int, "bytes": int,
                                         "total_ns": int, "max_ns": int, "buckets": [[int]]}],
                           "waits": [{"bdi": str, "stack_id": int, "count": int,
                                      "total_ns": int, "max_ns": int, "buckets": [[int]]}]},
            "dict: the in-kernel latency histograms of every ended request and wait "
            "(contract/histogram.py: sub_bits and max_msb give the bucket layout); requests: "
            "per connection and opcode (connection, bdi, opcode, opcode_name, count, errors, "
            "bytes, total_ns, max_ns, buckets); waits: per bdi and kernel stack (bdi, "
            "stack_id -> stacks table, count, total_ns, max_ns, buckets); buckets: [index, "
            "count] pairs. Refreshed at every flush; missing in captures written before it "
            "(schema_version 1)", LATER),
    MetaKey("start_monotonic_ns", int, "int"),
    MetaKey("start_epoch_ns", None, "int"),
    MetaKey("end_monotonic_ns", int, "int or null while running", None),
    MetaKey("lost_events", {"total": int, "per_cpu": [int], "by_kind": {"*": int}},
            "dict: total (int), per_cpu (list[int]), by_kind (dict[str,int])", _LOST_NONE),
    MetaKey("counters", {"*": int}, "dict[str,int]: in-kernel aggregates, e.g. wait tracepoint "
            "hits without a sleep", {}),
    MetaKey("server_threads", [{"connection": int, "bdi": str, "tgid": int, "pid": int,
                                "comm": str, "replies": int}],
            "list[dict]: connection, bdi, tgid, pid, comm, replies: the processes that answered "
            "FUSE requests (the servers), each with the first of its threads seen (pid, comm); "
            "captures of schema_version 1 list every thread", []),
    MetaKey("unseen_waiters", [{"pid": int, "tgid": int, "comm": str, "frames": [str]}],
            "list[dict]: pid, tgid, comm, frames of tasks still asleep in folio_wait_writeback "
            "at the end whose wait began before tracing (from /proc/*/stack; bdi unknown, so not "
            "in the waits table)", []),
    MetaKey("ring_pages", None, "int, BPF ring buffer size in pages (lost events grow when it "
            "is too small)", defaults.RING_PAGES),
    MetaKey("stopped_early", str, "str or null: why the tracer stopped by itself before being "
            "asked to (the capture's file system down to its reserve); the capture is whole up "
            "to its end", None),
    MetaKey("complete", bool, "bool: the tracer stopped cleanly and flushed everything", False),
    MetaKey("max_size_bytes", int, "int or null: fusewb trace --max-size; null when unbounded "
            "(missing in captures written before it)", LATER),
    MetaKey("dropped", {"parts": {"*": int}, "rows": {"*": int}, "bytes": {"*": int},
                        "until_monotonic_ns": int},
            "dict: what --max-size deleted, oldest parts first: parts, rows, bytes (each "
            "dict[str,int] per table; stacks are never dropped) and until_monotonic_ns (int or "
            "null: the latest event time in a dropped part; before it the capture is not whole)",
            LATER),
    MetaKey("tables", {"*": int}, "dict[str,int]: rows per table in the parts on disk (written "
            "minus dropped)", LATER),
    MetaKey("vmstat", {"ts_ns": [int]}, "dict[str,list]: /proc/vmstat over time, columns ts_ns "
            "(monotonic) and nr_dirty, nr_writeback, nr_writeback_temp in pages (null where this "
            "kernel lacks the counter: nr_writeback_temp counts FUSE temp pages, before 6.16); "
            "sampled once a second; missing in captures written before it", LATER),
    MetaKey("first_event_error", None, "str or null: the first ring buffer record user space "
            "could not turn into a row (counted in counters.user_event_errors)", LATER),
)

META_KEYS: dict[str, str] = {k.key: k.description for k in META}
META_SPEC: dict[str, Spec] = {k.key: k.spec for k in META if k.spec is not None}
_BY_KEY = {k.key: k for k in META}


def initial_meta(**values: Any) -> dict[str, Any]:
    """A new capture's ``meta.json``: every key but the LATER ones, in declaration order, from
    ``values`` or the default (values may also set LATER keys). ValueError for a key not
    declared or a REQUIRED one not given."""
    unknown = sorted(set(values) - set(_BY_KEY))
    if unknown:
        raise ValueError(f"meta.json has no key {', '.join(unknown)} (contract/meta.py)")
    missing = [k.key for k in META if k.default is REQUIRED and k.key not in values]
    if missing:
        raise ValueError(f"a new meta.json needs {', '.join(missing)}")
    meta = {k.key: values[k.key] if k.key in values else copy.deepcopy(k.default)
            for k in META if k.key in values or k.default is not LATER}
    return meta


# counters: the probe runs the kernel skipped (its recursion guard), a total and one per program
MISSED_TOTAL = "missed_runs"
_MISSED_PREFIX = "missed."


def missed_counters(per_program: dict[str, int]) -> dict[str, int]:
    """The ``counters`` entries for each program's skipped runs (none where the kernel does not
    count them): ``missed_runs`` and ``missed.<program>`` for each program that missed any."""
    if not per_program:
        return {}
    return {MISSED_TOTAL: sum(per_program.values()),
            **{_MISSED_PREFIX + name: runs for name, runs in per_program.items() if runs}}


def missed_by_program(counters: dict[str, Any]) -> dict[str, int]:
    """The programs with skipped runs in ``counters``, and how many each."""
    return {name.removeprefix(_MISSED_PREFIX): int(runs) for name, runs in sorted(counters.items())
            if name.startswith(_MISSED_PREFIX) and runs}


def missed_text(counters: dict[str, Any]) -> str:
    """``program runs, ...`` of the programs with skipped runs."""
    return ", ".join(f"{name} {runs}" for name, runs in missed_by_program(counters).items())
