"""The event registry: every kind of record the BPF programs send through the ring buffer,
declared once.

An entry names the kind's id (``EV_*`` in ``bpf/fusewb.h``), its C struct there (the layout's
one owner), the capture table its rows fill (:data:`fusewb.contract.schema.TABLES`) and what a
probe name contains when that probe produces the kind (how a reader tells "nothing happened"
from "not traced"): its markers (kprobes), and the tracepoints declared to feed its table in
:mod:`fusewb.contract.tracepoints`. From an entry follow the tracer's decoder (:mod:`fusewb.tracers.events`),
its row builder (:mod:`fusewb.tracers.rows`: a column takes the struct field of the same name)
and the analysis's check that a capture recorded the events a question needs
(:data:`fusewb.analysis.capture.TABLE_PROBES`).

Adding an event kind: docs/architecture.md "Where to add things" lists every file
(tests/test_where_to_add.py adds one in a copy of the tree and checks that list).

The ``vm`` table's rows carry a sub-kind (``vm_event.vm_kind``, ``VM_*`` in the header): each is
declared in :data:`VM_EVENT_KINDS` with its ``vm.kind`` name and its tracepoint group.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusewb.contract.tracepoints import TRACEPOINT_GROUPS

__all__ = ["EventKind", "VmKind", "EVENT_KINDS", "VM_EVENT_KINDS", "STACKS_FROM", "event_kind",
           "FUSE_WAIT_FUNCTIONS", "REQUEST_KPROBES", "OLDER_NAMES"]


@dataclass(frozen=True)
class EventKind:
    """One ring buffer event kind."""

    define: str  # its id in bpf/fusewb.h, the first u32 of the record ("EV_WAIT")
    struct: str  # its C struct in bpf/fusewb.h
    table: str  # the capture table its rows go to
    markers: tuple[str, ...]  # besides its tracepoints: a probe whose name contains one produces it

    @property
    def probes(self) -> tuple[str, ...]:
        """What the name of a probe producing this kind contains: a marker, or the event name of
        a tracepoint declared to feed its table (contract/tracepoints.py)."""
        events = (tp.split(":", 1)[1] for group in TRACEPOINT_GROUPS if group.table == self.table
                  for tp in group.tracepoints)
        return tuple(dict.fromkeys((*self.markers, *events)))


@dataclass(frozen=True)
class VmKind:
    """One ``vm`` sub-kind: ``vm_event.vm_kind`` in the kernel, ``vm.kind`` in the capture."""

    define: str  # VM_* in bpf/fusewb.h
    name: str  # the vm.kind value
    group: str  # the define of its tracepoint group (contract/tracepoints.py)

    @property
    def tracepoints(self) -> tuple[str, ...]:
        """The tracepoints (or begin/end pair) behind it."""
        return next(g.tracepoints for g in TRACEPOINT_GROUPS if g.define == self.group)

    @property
    def probes(self) -> tuple[str, ...]:
        """What the name of a probe producing it contains: its tracepoints' event names."""
        return tuple(tp.split(":", 1)[1] for tp in self.tracepoints)


# fuse.ko functions a task sleeps in waiting for in-flight WRITEs (temp-page era), or for the
# answer to write_inode's SETATTR that a server busy with held WRITEs gives after them (close
# behind a single-threaded server, the flusher), each with its define; probed at entry and
# return (bpf/kprobes.bpf.c, FUSE_WAIT_KPROBES). All take the inode first.
FUSE_WAIT_FUNCTIONS: list[str] = ["fuse_set_nowrite", "fuse_wait_on_page_writeback",
                                  "fuse_flush_times"]

# The request lifecycle without fuse:* tracepoints, probed at entry (bpf/requests.bpf.c):
# queued (unique assigned), read by a server thread, answered. All three or none; with the
# tracepoints (raw, keyed on the request) only fuse_dev_do_read, for the server's readers.
REQUEST_KPROBES: list[str] = ["queue_request_and_unlock", "fuse_dev_do_read", "fuse_request_end"]

# Pre-folio names (before 5.16-6.2) of functions the kprobe plan probes: the same place in the
# kernel, so a probe on the first attaches to the second where only that is in kallsyms (5.10).
OLDER_NAMES: dict[str, str] = {"folio_wait_writeback": "wait_on_page_writeback",
                               "shrink_folio_list": "shrink_page_list"}

EVENT_KINDS: tuple[EventKind, ...] = (
    # timed by kprobes on folio_wait_writeback or in fuse.ko where kprobes attach
    EventKind("EV_WAIT", "wait_event", "waits", ("folio_wait_writeback", *FUSE_WAIT_FUNCTIONS)),
    # kprobes on the request lifecycle before the fuse:* tracepoints (queued, answered)
    EventKind("EV_REQUEST", "request_event", "requests", (REQUEST_KPROBES[0], REQUEST_KPROBES[2])),
    EventKind("EV_THROTTLE", "throttle_event", "throttle", ()),
    EventKind("EV_VM", "vm_event", "vm", ("vmscan", "migrate", "compaction")),
)

# The stacks table holds the kernel stacks of this table's rows (waits.stack_id).
STACKS_FROM = "waits"

VM_EVENT_KINDS: tuple[VmKind, ...] = (
    VmKind("VM_DIRECT", "direct_reclaim", "VM_DIRECT_RECLAIM"),
    VmKind("VM_MEMCG", "memcg_reclaim", "VM_MEMCG_RECLAIM"),
    VmKind("VM_SHRINK", "shrink_inactive", "VM_SHRINK_INACTIVE"),
    VmKind("VM_THROTTLE", "vmscan_throttled", "VM_THROTTLED"),
    VmKind("VM_MIGRATE_PAGES", "migrate_pages", "VM_MIGRATE"),
    VmKind("VM_COMPACT", "compaction", "VM_COMPACTION"),
)


def event_kind(table: str) -> EventKind:
    """The event kind that fills ``table`` (KeyError when none does)."""
    for kind in EVENT_KINDS:
        if kind.table == table:
            return kind
    raise KeyError(table)
