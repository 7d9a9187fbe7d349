"""Which probes fusewb attaches on this kernel: the probe plan, chosen from the evidence of
:func:`fusewb.tracers.features.probe_features` (the same evidence ``fusewb doctor`` prints).

Two plans:

* ``tracepoint`` (works without kprobes): ``writeback:folio_wait_writeback`` with the kernel
  stack, timed by pairing it with the waiter's next uninterruptible sleep and wake-up in
  ``sched_switch`` (a raw tracepoint with ``task_struct`` offsets from BTF, else the
  ``sched:sched_switch`` tracepoint); FUSE request, dirty-throttling, reclaim, migration and
  compaction tracepoints.
* ``kprobe`` (where kprobes attach): entry and return of ``folio_wait_writeback`` time each
  wait exactly (the tracepoint inside marks it as a FUSE wait), plus counts and latencies of
  the FUSE writeback and reclaim/migration functions present in kallsyms. Before 6.16 (temp
  pages) tasks wait for a server's WRITEs inside fuse.ko instead: entry and return of
  ``fuse_set_nowrite`` and ``fuse_wait_on_page_writeback`` (or the ``.part.N``/``.isra.N``
  clone kallsyms has) time those waits into the same wait events, and ``fuse_flush_times``
  the wait for write_inode's SETATTR, which a busy server answers only after its WRITEs. Without ``fuse:*``
  tracepoints (before 6.12), FUSE requests come from kprobes on their lifecycle, keyed on the
  request pointer, fields at offsets from the fuse module's BTF.

The plan is plain data (no bcc import): ``defines`` go to the BPF compiler as ``-DNAME=VALUE``,
among them the name each tracepoint field has on this kernel (``TPF_*``, from the tracefs
``format`` files: :mod:`fusewb.tracers.tpfields`). A column field no name matches stays
undefined and is listed in ``absent_columns``; a tracepoint lacking a required field is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fusewb.contract.events import FUSE_WAIT_FUNCTIONS, OLDER_NAMES, REQUEST_KPROBES
from fusewb.contract.tracepoints import TRACEPOINT_GROUPS
from fusewb.tracers.btf import Btf, BtfError, load_module_btf, load_vmlinux_btf
from fusewb.tracers.features import WAIT_FUNCTIONS
from fusewb.tracers.tpfields import select_fields

if TYPE_CHECKING:
    from fusewb.tracers.features import KernelFeatures

__all__ = ["ProbePlan", "choose_plan", "PLANS", "KPROBE_FUNCTIONS", "FUSE_WAIT_FUNCTIONS",
           "REQUEST_KPROBES"]

PLANS = ("tracepoint", "kprobe")

# Functions the kprobe plan times (entry + return, aggregated in the kernel), in the order of
# their ids in bpf/fusewb.h (FN_*).
KPROBE_FUNCTIONS: list[str] = [
    "fuse_writepage",
    "fuse_writepages",
    "fuse_writepage_end",
    "fuse_iomap_writeback_range",
    "shrink_folio_list",
    "migrate_pages",
    "wait_sb_inodes",
]

# FUSE_WAIT_FUNCTIONS (the temp-page waits in fuse.ko) and REQUEST_KPROBES (the request
# lifecycle without fuse:* tracepoints) are declared in contract/events.py.

# (define, struct, member) read by the kprobes; vmlinux BTF for the first, the fuse module's
# BTF (vmlinux's when fuse is built in) for the request fields.
_WAIT_OFFSETS = [("INODE_SB_OFF", "inode", "i_sb"), ("INODE_INO_OFF", "inode", "i_ino"),
                 ("SB_BDI_OFF", "super_block", "s_bdi"), ("BDI_NAME_OFF", "backing_dev_info", "dev_name"),
                 ("TASK_NVCSW_OFF", "task_struct", "nvcsw")]
_REQUEST_OFFSETS = [("REQ_FM_OFF", "fuse_req", "fm"), ("REQ_OPCODE_OFF", "fuse_req", "in.h.opcode"),
                    ("REQ_UNIQUE_OFF", "fuse_req", "in.h.unique"), ("REQ_LEN_OFF", "fuse_req", "in.h.len"),
                    ("REQ_ERROR_OFF", "fuse_req", "out.h.error"), ("FM_FC_OFF", "fuse_mount", "fc"),
                    ("FC_DEV_OFF", "fuse_conn", "dev"), ("FUD_FC_OFF", "fuse_dev", "fc"),
                    # the sender's comm, read from its task only for requests that become rows
                    ("TASK_PID_OFF", "task_struct", "pid"), ("TASK_COMM_OFF", "task_struct", "comm")]


def _request_len_layout(btf: Btf | None = None) -> dict[str, str]:
    """Defines to add up a request's length from its arguments as fuse_len_args() does
    (``in.h`` plus each ``args->in_args[i].size``), for the send of kernels that assign
    ``in.h.len`` only after queue_request_and_unlock's entry (before 6.18). BtfError when the
    fuse module's BTF (``btf``, else read here) lacks a piece."""
    btf = btf or load_module_btf("fuse")
    nargs = btf.array_length("fuse_args", "in_args")
    numargs_size = btf.member_size("fuse_args", "in_numargs")
    if numargs_size not in (1, 2, 4):
        raise BtfError(f"fuse_args.in_numargs is {numargs_size} bytes")
    return {
        "REQ_IN_HEADER_SIZE": str(btf.member_size("fuse_req", "in.h")),
        "REQ_ARGS_OFF": str(btf.member_offset("fuse_req", "args")),
        "ARGS_IN_NUMARGS_OFF": str(btf.member_offset("fuse_args", "in_numargs")),
        "ARGS_IN_NUMARGS_SIZE": str(numargs_size),
        "ARGS_IN_ARGS_OFF": str(btf.member_offset("fuse_args", "in_args")),
        "IN_ARGS_MAX": str(nargs),
        "IN_ARG_STRIDE": str(btf.member_size("fuse_args", "in_args") // nargs),
        "IN_ARG_SIZE_OFF": str(btf.member_offset("fuse_in_arg", "size")),
    }

# Optional tracepoints: (tracepoints, the define that compiles their programs).
_OPTIONAL_TRACEPOINTS: list[tuple[list[str], str]] = [
    (list(group.tracepoints), group.define) for group in TRACEPOINT_GROUPS if group.optional]


@dataclass
class ProbePlan:
    """The probes to attach and the defines the BPF sources are compiled with."""

    name: str
    tracepoints: list[str] = field(default_factory=list)  # "category:event"
    raw_tracepoints: list[str] = field(default_factory=list)  # "sched_switch"
    kprobes: list[str] = field(default_factory=list)  # functions probed at entry and return
    entry_kprobes: list[str] = field(default_factory=list)  # functions probed at entry only
    symbols: dict[str, str] = field(default_factory=dict)  # function -> kallsyms name when a clone
    defines: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # probe -> why not used
    notes: list[str] = field(default_factory=list)
    absent_columns: dict[str, list[str]] = field(default_factory=dict)  # table -> columns

    def probes(self) -> list[str]:
        """Every probe of the plan, as recorded in a capture's ``meta.json``."""
        out = [f"tracepoint:{tp}" for tp in self.tracepoints]
        out += [f"raw_tracepoint:{tp}" for tp in self.raw_tracepoints]
        for fn in self.kprobes:
            out += [f"kprobe:{self.symbol(fn)}", f"kretprobe:{self.symbol(fn)}"]
        out += [f"kprobe:{self.symbol(fn)}" for fn in self.entry_kprobes]
        return out

    def symbol(self, function: str) -> str:
        """The kallsyms name a probe on ``function`` attaches to (a clone such as ``.part.0``)."""
        return self.symbols.get(function, function)

    def describe(self) -> list[str]:
        """Human-readable lines: what is attached, how waits are timed, what is skipped."""
        lines = [f"plan '{self.name}': {len(self.probes())} probes"]
        lines += self.notes
        # one line per probe kind and category, one per reason for skipping: fits a screen
        attached: dict[str, list[str]] = {}
        for probe in self.probes():
            kind, _, name = probe.rpartition(":")
            attached.setdefault(kind, []).append(name)
        lines += [f"attach {kind}: {', '.join(names)}" for kind, names in attached.items()]
        skipped: dict[str, list[str]] = {}
        for probe, why in sorted(self.skipped.items()):
            skipped.setdefault(why, []).append(probe)
        lines += [f"skip {', '.join(probes)}: {why}" for why, probes in skipped.items()]
        return lines


def _sched_switch(features: KernelFeatures, plan: ProbePlan) -> None:
    """Raw ``sched_switch`` with BTF offsets, else the ``sched:sched_switch`` tracepoint."""
    why_not_raw = None
    if not features.raw_tracepoint.ok:
        why_not_raw = f"raw tracepoints unavailable ({features.raw_tracepoint.evidence})"
    else:
        try:
            btf = load_vmlinux_btf()
            arity = btf.func_proto_arity("btf_trace_sched_switch")
            plan.defines.update(
                SCHED_SWITCH_RAW="1",
                TASK_PID_OFF=str(btf.member_offset("task_struct", "pid")),
                SCHED_SWITCH_STATE_ARG="1" if arity >= 5 else "0",
            )
            if arity < 5:
                plan.defines["TASK_STATE_OFF"] = str(btf.member_offset("task_struct", "__state"))
            plan.raw_tracepoints.append("sched_switch")
            plan.skipped["tracepoint:sched:sched_switch"] = "raw tracepoint used instead (cheaper)"
            return
        except BtfError as exc:
            why_not_raw = f"BTF: {exc}"
    if features.tracepoints.get("sched:sched_switch"):
        plan.defines["SCHED_SWITCH_RAW"] = "0"
        plan.tracepoints.append("sched:sched_switch")
        plan.skipped["raw_tracepoint:sched_switch"] = why_not_raw
    else:
        plan.skipped["tracepoint:sched:sched_switch"] = "absent: waits cannot be timed"
        plan.defines["WAIT_TIMING"] = "0"


def choose_plan(features: KernelFeatures, force: str | None = None) -> ProbePlan:
    """The probe plan for this kernel; ``force`` ("tracepoint"/"kprobe") overrides the choice
    (tests force "kprobe" to compile and verifier-load it where kprobes cannot attach)."""
    if force is not None and force not in PLANS:
        raise ValueError(f"unknown plan {force!r}; choose one of {', '.join(PLANS)}")
    wait_fn = _present(features, "folio_wait_writeback")
    can_kprobe = features.kprobes.ok and wait_fn is not None
    name = force or ("kprobe" if can_kprobe else "tracepoint")
    plan = ProbePlan(name)
    plan.defines.update(WAIT_FN_START="0ULL", WAIT_FN_END="0ULL")  # no sleep-stack check
    present = {tp: fields for tp, fields in features.tracepoint_fields.items() if features.tracepoints.get(tp)}
    lacking = select_fields(present).unusable
    tps = {tp: ok and tp not in lacking for tp, ok in features.tracepoints.items()}

    if tps.get("writeback:folio_wait_writeback"):
        plan.tracepoints.append("writeback:folio_wait_writeback")
        plan.defines["WAIT_TP"] = "1"
    elif tps.get("writeback:wait_on_page_writeback"):
        plan.tracepoints.append("writeback:wait_on_page_writeback")
        plan.defines["WAIT_TP"] = "2"
    else:
        plan.defines["WAIT_TP"] = "0"
        plan.skipped["tracepoint:writeback:folio_wait_writeback"] = "absent: waits cannot be told FUSE"

    if name == "kprobe":
        plan.defines.update(KPROBES="1", WAIT_TIMING="2")
        plan.kprobes.append("folio_wait_writeback")
        if wait_fn not in (None, "folio_wait_writeback"):
            plan.symbols["folio_wait_writeback"] = wait_fn
        plan.notes.append(f"waits timed by kprobe/kretprobe on {wait_fn or 'folio_wait_writeback'} (exact)")
        for fn in KPROBE_FUNCTIONS:
            if (present := _present(features, fn)) is not None:
                plan.kprobes.append(fn)
                plan.defines[f"HAVE_FN_{fn.upper()}"] = "1"
                if present != fn:
                    plan.symbols[fn] = present
            else:
                plan.skipped[f"kprobe:{fn}"] = "not in kallsyms (inlined, or another kernel version)"
        _fuse_kprobes(features, plan)
        if not features.kprobes.ok:
            plan.notes.append(f"forced: kprobes cannot attach here ({features.kprobes.evidence})")
    else:
        plan.defines.update(KPROBES="0", WAIT_TIMING="1")
        plan.notes.append(
            "waits timed from the wait tracepoint to the waiter's wake-up after its "
            "uninterruptible sleep in folio_wait_writeback (sched_switch)"
        )
        _sched_switch(features, plan)
        span = next((features.function_ranges[fn] for fn in WAIT_FUNCTIONS
                     if fn in features.function_ranges), None)
        if span is not None:
            plan.defines.update(WAIT_FN_START=f"{span[0]:#x}ULL", WAIT_FN_END=f"{span[1]:#x}ULL")
        else:
            plan.notes.append("kallsyms hides the wait function: any D sleep after the tracepoint counts")
        why = ("kprobes cannot attach on this kernel (see the kprobes check)" if not features.kprobes.ok
               else "no folio_wait_writeback or wait_on_page_writeback in kallsyms to time waits with")
        for fn in ["folio_wait_writeback", *KPROBE_FUNCTIONS, *FUSE_WAIT_FUNCTIONS, *REQUEST_KPROBES]:
            plan.skipped[f"kprobe:{fn}"] = why

    _fuse_requests(features, plan)
    for group, define in _OPTIONAL_TRACEPOINTS:
        if define == "FUSE_REQUESTS" and plan.defines.get("FUSE_REQ_PTR"):
            continue
        if all(tps.get(tp) for tp in group):
            plan.tracepoints += group
            plan.defines[define] = "1"
        else:
            missing = [tp for tp in group if not tps.get(tp)]
            for tp in group:
                plan.skipped[f"tracepoint:{tp}"] = f"not usable ({', '.join(missing)} absent or lacking fields)"
    if tps.get("migrate:mm_migrate_pages"):
        plan.tracepoints.append("migrate:mm_migrate_pages")
        paired = bool(tps.get("migrate:mm_migrate_pages_start"))
        if paired:
            plan.tracepoints.append("migrate:mm_migrate_pages_start")
        else:
            plan.skipped["tracepoint:migrate:mm_migrate_pages_start"] = "absent: migrations without duration"
        plan.defines["VM_MIGRATE"] = "2" if paired else "1"
    else:
        plan.skipped["tracepoint:migrate:mm_migrate_pages"] = "absent in tracefs"
    for tp, fields in lacking.items():
        plan.skipped[f"tracepoint:{tp}"] = f"its tracefs format lacks {', '.join(fields)}"
    _fields(features, plan)
    return plan


def _present(features: KernelFeatures, function: str) -> str | None:
    """The kallsyms name a probe on ``function`` attaches to on this kernel: its own (or its
    clone's), else its pre-folio name (``OLDER_NAMES``); None when neither is there."""
    names = features.symbol_names
    return names.get(function) or names.get(OLDER_NAMES.get(function, ""))


def _member_offsets(btf: Btf, wanted: list[tuple[str, str, str]]) -> dict[str, str]:
    """Defines of struct member offsets from ``btf`` (BtfError when one is missing)."""
    return {define: str(btf.member_offset(struct, member)) for define, struct, member in wanted}


def _fuse_kprobes(features: KernelFeatures, plan: ProbePlan) -> None:
    """The kprobe plan's temp-page waits in fuse.ko: symbols from kallsyms (clones included),
    offsets from vmlinux BTF."""
    names = features.symbol_names
    waits = [fn for fn in FUSE_WAIT_FUNCTIONS if fn in names]
    for fn in FUSE_WAIT_FUNCTIONS:
        if fn not in names:
            plan.skipped[f"kprobe:{fn}"] = "not in kallsyms (fuse.ko not loaded, or a kernel without it)"
    if waits:
        try:
            plan.defines.update(_member_offsets(load_vmlinux_btf(), _WAIT_OFFSETS))
        except BtfError as exc:
            for fn in waits:
                plan.skipped[f"kprobe:{fn}"] = f"BTF: {exc}"
            waits = []
    for fn in waits:
        plan.kprobes.append(fn)
        plan.defines[f"HAVE_FN_{fn.upper()}"] = "1"
        if names[fn] != fn:
            plan.symbols[fn] = names[fn]
    if waits:
        plan.defines["FUSE_WAIT_KPROBES"] = "1"
        plan.notes.append(f"temp-page waits in fuse.ko timed by kprobe/kretprobe on "
                          f"{', '.join(names[fn] for fn in waits)}")


def _fuse_requests(features: KernelFeatures, plan: ProbePlan) -> None:
    """FUSE requests keyed on the request pointer, fields at offsets from the fuse module's
    BTF: the raw fuse:* tracepoints where they exist (6.12+; their fields do not expose the
    request, and 6.12-6.17 send unique 0), else kprobes on the lifecycle (kprobe plan). When
    neither works, the tracepoints' fields joined on (connection, unique), if present."""
    names = features.symbol_names
    tps = all(features.tracepoints.get(tp) for tp in ("fuse:fuse_request_send", "fuse:fuse_request_end"))
    kprobe = plan.name == "kprobe"
    why, fuse_btf = None, None
    try:
        fuse_btf = load_module_btf("fuse")
        offsets = _member_offsets(fuse_btf, _REQUEST_OFFSETS)
    except BtfError as exc:
        offsets, why = {}, f"BTF: {exc}"
    if offsets and tps and features.raw_tracepoint.ok:
        plan.defines.update(offsets, FUSE_REQ_PTR="2")
        plan.raw_tracepoints += ["fuse_request_send", "fuse_request_end"]
        for tp in ("fuse:fuse_request_send", "fuse:fuse_request_end"):
            plan.skipped[f"tracepoint:{tp}"] = "raw tracepoint used instead (keyed on the request pointer)"
        kprobe_fns = ["fuse_dev_do_read"] if kprobe and "fuse_dev_do_read" in names else []
    elif offsets and kprobe and all(fn in names for fn in REQUEST_KPROBES):
        plan.defines.update(offsets, FUSE_REQ_PTR="1")
        kprobe_fns = list(REQUEST_KPROBES)
    else:
        if why is None:
            missing = [fn for fn in REQUEST_KPROBES if fn not in names]
            why = f"{', '.join(missing) or 'kprobes'} unavailable" if kprobe or not tps else "raw tracepoints unavailable"
        for fn in REQUEST_KPROBES:
            plan.skipped.setdefault(f"kprobe:{fn}", f"requests keyed on the request pointer not possible ({why})")
        if not tps:
            plan.notes.append(f"FUSE requests are not traced on this kernel ({why}); waits are")
        return
    for fn in kprobe_fns:
        plan.entry_kprobes.append(fn)
        plan.defines[f"HAVE_FN_{fn.upper()}"] = "1"
        if names[fn] != fn:
            plan.symbols[fn] = names[fn]
    try:
        plan.defines.update(_request_len_layout(fuse_btf), FUSE_REQ_LEN_FROM_ARGS="1")
    except BtfError as exc:
        plan.notes.append(f"lengths of requests unanswered at the end may read 0 (BTF: {exc})")
    hooks = "raw tracepoints fuse_request_send/end" if plan.defines["FUSE_REQ_PTR"] == "2" else "kprobes"
    plan.notes.append(f"FUSE requests from {hooks}, keyed on the request pointer"
                      + (", server threads from fuse_dev_do_read" if "fuse_dev_do_read" in kprobe_fns else ""))


def _fields(features: KernelFeatures, plan: ProbePlan) -> None:
    """The name of each field the plan's tracepoints read, as defines; the columns none fills."""
    chosen = select_fields({tp: features.tracepoint_fields.get(tp, []) for tp in plan.tracepoints})
    plan.defines.update(chosen.defines)
    plan.absent_columns = chosen.absent_columns
    for where, older in sorted(chosen.renamed.items()):
        plan.notes.append(f"field {where} is called {older} on this kernel")
    for table, columns in sorted(chosen.absent_columns.items()):
        named = ", ".join(f"{table}.{column}" for column in columns)
        plan.notes.append(f"absent on this kernel (null in the capture): {named}")
