"""What the running kernel offers fusewb, each answer with its evidence.

Probes are chosen from this evidence, never from the version number: tracefs event directories
for tracepoints and their ``format`` files for the fields each one has (renamed across
versions: :mod:`fusewb.tracers.tpfields`), ``/proc/kallsyms`` for kernel functions, the kernel's
perf event sources for kprobe/uprobe attachment, a real load of the smallest program of each
BPF program type (:mod:`fusewb.tracers.progload`, no bpftool needed), and with ``test_loads`` a
real uprobe attachment and an fentry load.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fusewb.contract.events import FUSE_WAIT_FUNCTIONS, OLDER_NAMES, REQUEST_KPROBES
from fusewb.contract.tracepoints import ALL_TRACEPOINTS
from fusewb.tracers.btf import BtfError, load_vmlinux_btf
from fusewb.tracers.headers import HeaderTree, find_header_tree
from fusewb.tracers.kallsyms import read_kallsyms
from fusewb.tracers.progload import BPF_TRACE_FENTRY, load_smallest
from fusewb.tracers.tpfields import read_fields

__all__ = [
    "Check",
    "KernelFeatures",
    "TRACEPOINTS",
    "KERNEL_FUNCTIONS",
    "WAIT_FUNCTIONS",
    "probe_features",
    "tracefs_root",
]

# Every tracepoint fusewb may use, "category:name" (declared in contract/tracepoints.py). Older
# kernels name the wait tracepoint wait_on_page_writeback (before the folio conversion in 5.16/5.17).
TRACEPOINTS: list[str] = list(ALL_TRACEPOINTS)

# The function a writeback wait sleeps in (its pre-folio name first on 5.10): the tracepoint plan
# takes its address range from kallsyms.
WAIT_FUNCTIONS: tuple[str, ...] = ("folio_wait_writeback", OLDER_NAMES["folio_wait_writeback"])

# Kernel functions the kprobe plan may probe, and whose presence tells the FUSE writeback era.
KERNEL_FUNCTIONS: list[str] = [
    "folio_wait_writeback",
    "fuse_writepage",  # single-page writeback, removed in 6.9
    "fuse_writepages",
    "fuse_writepage_end",
    "fuse_iomap_writeback_range",  # writeback through iomap, 6.17+
    "fuse_writepage_args_setup",
    "fuse_fsync",
    "fuse_flush",
    "fuse_page_mkwrite",
    "shrink_folio_list",
    "migrate_pages",
    "migrate_pages_batch",
    "wait_sb_inodes",
    *OLDER_NAMES.values(),  # the pre-folio names of two of these (5.10)
    # temp-page era (before 6.16): tasks wait in fuse.ko for the in-flight WRITEs of their range
    # (fuse_set_nowrite: every WRITE of the inode; fuse_wait_on_page_writeback: one page, often
    # a .part.N clone; fuse_flush_times: write_inode's SETATTR, answered after held WRITEs)
    *FUSE_WAIT_FUNCTIONS,
    # FUSE request lifecycle without fuse:* tracepoints (before 6.12): queued, read, answered
    *REQUEST_KPROBES,
]

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
PERF_SOURCES = Path("/sys/bus/event_source/devices")
BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")
FENTRY_TEST_FUNCTION = "vfs_fsync"  # a function on the fsync path every kernel has


@dataclass(frozen=True)
class Check:
    """A yes/no answer about the kernel and the evidence it rests on."""

    ok: bool
    evidence: str


@dataclass
class KernelFeatures:
    """Everything fusewb needs to know about this kernel to choose its probes."""

    release: str
    root: bool
    btf: Check
    tracefs: Check
    raw_tracepoint: Check
    kprobes: Check
    fentry: Check
    uprobes: Check
    tracepoints: dict[str, bool] = field(default_factory=dict)
    tracepoint_fields: dict[str, list[str]] = field(default_factory=dict)  # present ones: tracefs format
    symbols: dict[str, bool] = field(default_factory=dict)
    symbol_names: dict[str, str] = field(default_factory=dict)  # function -> its kallsyms name (clone)
    function_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # of WAIT_FUNCTIONS
    headers: HeaderTree | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["headers"] = (
            None
            if self.headers is None
            else {"kind": self.headers.kind, "path": str(self.headers.path), "note": self.headers.note}
        )
        return out


def _exists(path: Path) -> bool:
    """``path.exists()`` that answers False where we may not look (not root)."""
    try:
        return path.exists()
    except OSError:
        return False


def _mounted_tracefs() -> Path | None:
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[2] == "tracefs":
                return Path(parts[1])
    except OSError:
        return None
    return None


def tracefs_root(mount: bool = True) -> Path | None:
    """The tracefs mount point; with ``mount`` and root, mount it at /sys/kernel/tracing if absent."""
    found = _mounted_tracefs()
    if found is not None or not mount or os.geteuid() != 0:
        return found
    target = TRACEFS_CANDIDATES[0]
    if subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)], capture_output=True).returncode:
        return None
    return _mounted_tracefs()


def _prog_type_check(name: str, what: str) -> Check:
    """A test load of the smallest program of type ``name`` (root only)."""
    if os.geteuid() != 0:
        return Check(False, f"unknown: a test load of a {name} program needs root (for {what})")
    return Check(*load_smallest(name))


def _kprobes_check(tracefs: Path | None) -> Check:
    pmu = _exists(PERF_SOURCES / "kprobe" / "type")
    events = tracefs is not None and _exists(tracefs / "kprobe_events")
    loadable = _prog_type_check("kprobe", "kprobes")
    if pmu or events:
        where = "perf source 'kprobe'" if pmu else "tracefs kprobe_events"
        return Check(loadable.ok, f"{where} present; {loadable.evidence}")
    return Check(
        False,
        f"no perf source {PERF_SOURCES}/kprobe and no tracefs kprobe_events (CONFIG_KPROBES off); "
        f"programs still load ({loadable.evidence}) but cannot attach",
    )


def _fentry_check(test_loads: bool) -> Check:
    """A test load of an fentry program on :data:`FENTRY_TEST_FUNCTION` (with ``test_loads``:
    no plan uses fentry, so only doctor asks)."""
    if not _exists(BTF_VMLINUX):
        return Check(False, f"no {BTF_VMLINUX}: fentry needs BTF")
    if not test_loads:
        return Check(False, "not test-loaded (fusewb doctor does)")
    if os.geteuid() != 0:
        return Check(False, "unknown: a test load of an fentry program needs root")
    try:
        func = load_vmlinux_btf().func_id(FENTRY_TEST_FUNCTION)
    except (BtfError, OSError) as exc:
        return Check(False, f"no BTF id for {FENTRY_TEST_FUNCTION}: {exc}")
    ok, evidence = load_smallest("tracing", BPF_TRACE_FENTRY, func, label="fentry")
    return Check(ok, f"{evidence} on {FENTRY_TEST_FUNCTION}")


def _uprobe_attach_test() -> tuple[bool, str]:
    """Attach a real BPF uprobe to libc's getpid and detach it again."""
    try:
        from bcc import BPF  # noqa: PLC0415 (bcc is heavy and optional here)

        from fusewb.tracers.headers import prepare_bcc_environment  # noqa: PLC0415

        prepare_bcc_environment()
        bpf = BPF(text="int fusewb_uprobe_test(void *ctx) { return 0; }")
        try:
            bpf.attach_uprobe(name="c", sym="getpid", fn_name="fusewb_uprobe_test")
            return True, "attached a test uprobe to libc getpid and detached it"
        finally:
            bpf.cleanup()
    except Exception as exc:  # noqa: BLE001 - any failure is the evidence we report
        return False, f"test uprobe attach failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def _uprobes_check(test_loads: bool) -> Check:
    pmu = _exists(PERF_SOURCES / "uprobe" / "type")
    if not pmu:
        return Check(False, f"no perf source {PERF_SOURCES}/uprobe (CONFIG_UPROBE_EVENTS off)")
    if not test_loads or os.geteuid() != 0:
        return Check(True, "perf source 'uprobe' present (not test-attached)")
    ok, evidence = _uprobe_attach_test()
    return Check(ok, evidence)


def probe_features(test_loads: bool = True) -> KernelFeatures:
    """Look at the running kernel. ``test_loads`` adds the slow checks (a real uprobe attach, an
    fentry load)."""
    root = os.geteuid() == 0
    tracefs = tracefs_root(mount=True)
    tracepoints = {
        tp: tracefs is not None and _exists(tracefs / "events" / tp.replace(":", "/") / "id")
        for tp in TRACEPOINTS
    }
    fields: dict[str, list[str]] = {}
    for tp, present in tracepoints.items():
        found = read_fields(tracefs, tp) if present and tracefs is not None else None
        if found is not None:
            fields[tp] = found
    kallsyms = read_kallsyms(KERNEL_FUNCTIONS, WAIT_FUNCTIONS)
    names = kallsyms.names
    btf = _exists(BTF_VMLINUX)
    raw = _prog_type_check("raw_tracepoint", "raw tracepoints")
    return KernelFeatures(
        release=platform.release(),
        root=root,
        btf=Check(btf, f"{BTF_VMLINUX} {'present' if btf else 'absent'}"),
        tracefs=Check(
            tracefs is not None,
            f"mounted at {tracefs}" if tracefs else "not mounted (mount -t tracefs nodev /sys/kernel/tracing)",
        ),
        raw_tracepoint=Check(raw.ok and btf, raw.evidence + ("" if btf else "; no BTF for field offsets")),
        kprobes=_kprobes_check(tracefs),
        fentry=_fentry_check(test_loads),
        uprobes=_uprobes_check(test_loads),
        tracepoints=tracepoints,
        tracepoint_fields=fields,
        symbols={name: name in names for name in KERNEL_FUNCTIONS},
        symbol_names={name: names[name] for name in KERNEL_FUNCTIONS if name in names},
        function_ranges=kallsyms.ranges,
        headers=find_header_tree(build=root),
    )
