"""Compile fusewb's BPF sources (``bpf/``) for a probe plan with bcc, attach what bcc does not
attach by itself (kprobes), and render the C for ``fusewb trace --ebpf``.

bcc attaches ``TRACEPOINT_PROBE`` and ``RAW_TRACEPOINT_PROBE`` programs when it loads them;
``BPF.cleanup()`` detaches everything; :func:`release_compile_memory` gives back the compile's heap and the compiler's pages. :func:`verify_program` (``fusewb doctor``) compiles the same
program and loads each of its programs into the verifier without attaching any.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fusewb.bpf import source_dir
from fusewb.contract import defaults, histogram
from fusewb.contract.errors import FusewbError
from fusewb.contract.extras import missing_bcc
from fusewb.tracers.plan import ProbePlan

if TYPE_CHECKING:
    from bcc import BPF

__all__ = ["BPF_DIR", "MAIN_SOURCE", "BuildOptions", "cflags", "ebpf_text", "compile_program",
           "attach_kprobes", "detach_probes", "kprobe_function_names", "release_compile_memory",
           "verify_program", "compiler_mappings", "COMPILER_LIBRARIES", "Mapping"]

BPF_DIR = source_dir()
MAIN_SOURCE = BPF_DIR / "fusewb.bpf.c"
_LOCAL_INCLUDE = re.compile(r'^#include "([\w.]+)"\s*$', re.M)


@dataclass(frozen=True)
class BuildOptions:
    """Compile-time options besides the plan: ring size, pid filter, map sizes, from how long a
    request or wait becomes a row (defaults: :mod:`fusewb.contract.defaults`; the histograms'
    layout: :mod:`fusewb.contract.histogram`)."""

    ring_pages: int = defaults.RING_PAGES
    filter_tgid: int = 0
    max_pending: int = defaults.MAX_PENDING
    max_inflight: int = defaults.MAX_INFLIGHT
    request_slots: int = defaults.REQUEST_SLOTS
    stack_entries: int = defaults.STACK_ENTRIES
    req_hist_entries: int = defaults.REQ_HIST_ENTRIES
    wait_hist_entries: int = defaults.WAIT_HIST_ENTRIES
    filter_entries: int = defaults.FILTER_ENTRIES
    server_thread_entries: int = defaults.SERVER_THREAD_ENTRIES
    inflight_conn_entries: int = defaults.INFLIGHT_CONN_ENTRIES
    row_request_ns: int = int(defaults.THRESHOLD_MS * 1e6)  # 0: every request is a row
    row_wait_ns: int = int(defaults.THRESHOLD_MS * 1e6)  # 0: every wait is a row

    def defines(self) -> dict[str, str]:
        if self.ring_pages < 1 or self.ring_pages & (self.ring_pages - 1):
            raise FusewbError(f"--ring-pages {self.ring_pages} is not a power of two", "use 1, 2, 4, ... 4096")
        return {
            "RING_PAGES": str(self.ring_pages),
            "FILTER_TGID": str(self.filter_tgid),
            "MAX_PENDING": str(self.max_pending),
            "MAX_INFLIGHT": str(self.max_inflight),
            "REQ_SLOTS": str(self.request_slots),
            "STACK_ENTRIES": str(self.stack_entries),
            "REQ_HIST_ENTRIES": str(self.req_hist_entries),
            "WAIT_HIST_ENTRIES": str(self.wait_hist_entries),
            "FILTER_ENTRIES": str(self.filter_entries),
            "SERVER_THREAD_ENTRIES": str(self.server_thread_entries),
            "INFLIGHT_CONN_ENTRIES": str(self.inflight_conn_entries),
            "ROW_REQ_NS": f"{self.row_request_ns}ULL",
            "ROW_WAIT_NS": f"{self.row_wait_ns}ULL",
            **histogram.defines(),
        }


def cflags(plan: ProbePlan, options: BuildOptions) -> list[str]:
    """The compiler flags: the bpf/ include path, then the plan's and the options' defines."""
    defines = {**plan.defines, **options.defines()}
    return [f"-I{BPF_DIR}", *(f"-D{name}={value}" for name, value in sorted(defines.items()))]


def _inline(path: Path) -> str:
    """The source with our own includes pasted in: bcc generates the argument structs of
    ``TRACEPOINT_PROBE`` only for probes in the main text, not in included files."""
    return _LOCAL_INCLUDE.sub(
        lambda m: f"/* ---- {m.group(1)} ---- */\n" + _inline(BPF_DIR / m.group(1)),
        path.read_text(),
    )


def ebpf_text(plan: ProbePlan, options: BuildOptions) -> str:
    """The C that ``compile_program`` compiles: the defines as a header, local includes inlined."""
    header = "\n".join(
        ["/* fusewb BPF program, plan '%s'. Compiled with:" % plan.name]
        + [f" *   {flag}" for flag in cflags(plan, options)]
        + [" */"]
    )
    return header + "\n" + _inline(MAIN_SOURCE)


def _first_error_line(exc: Exception) -> str:
    for line in str(exc).splitlines():
        if "error" in line.lower():
            return line.strip()
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def compile_program(plan: ProbePlan, options: BuildOptions) -> BPF:
    """Compile and load (bcc attaches the tracepoints); FusewbError on any failure."""
    try:
        from bcc import BPF  # noqa: PLC0415 - heavy, only when tracing
    except ImportError as exc:
        raise missing_bcc(exc) from None

    from fusewb.tracers.headers import prepare_bcc_environment  # noqa: PLC0415

    prepare_bcc_environment()
    try:
        return BPF(text=ebpf_text(plan, options).encode(), cflags=cflags(plan, options))
    except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception for compile/attach errors
        raise FusewbError(
            f"bcc could not compile or attach fusewb's BPF program ({_first_error_line(exc)})",
            "run 'fusewb doctor' and 'fusewb trace --ebpf' to see the plan and the C",
        ) from None


# The compiler's shared libraries that libbcc maps (LLVM's and clang's): once the program is
# loaded, the tracer does not run their code again until another compile.
COMPILER_LIBRARIES = re.compile(r"/lib(LLVM|clang)[-.\w]*\.so[.\d]*$")
MADV_DONTNEED = 4  # linux/mman.h
MADV_PAGEOUT = 21  # Linux 5.4 and later


@dataclass(frozen=True)
class Mapping:
    """A mapping of a compiler library in this process (/proc/self/smaps): its span, its
    permissions, and how much of it is anonymous (pages this process changed: relocations)."""

    start: int
    end: int
    perms: str
    anonymous_kib: int

    @property
    def advice(self) -> int:
        """MADV_DONTNEED for code with no page of its own (nothing to lose: its pages are
        unmapped from this process and read again from the page cache if the code runs again,
        even where another process maps them too); MADV_PAGEOUT for the rest (the kernel
        reclaims the clean pages no other process maps and keeps changed ones)."""
        return MADV_DONTNEED if self.perms == "r-xp" and self.anonymous_kib == 0 else MADV_PAGEOUT


def compiler_mappings(smaps: Path = Path("/proc/self/smaps")) -> list[Mapping]:
    """Every mapping of a compiler library in ``smaps`` (this process's by default)."""
    found: list[Mapping] = []
    current: list[Any] | None = None
    with open(smaps, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            fields = line.split(maxsplit=5)
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                if current is not None:
                    found.append(Mapping(*current))
                current = None
                if len(fields) == 6 and COMPILER_LIBRARIES.search(fields[5].rstrip("\n")):
                    start, end = (int(address, 16) for address in fields[0].split("-"))
                    current = [start, end, fields[1], 0]
            elif current is not None and fields[0] == "Anonymous:":
                current[3] = int(fields[1])
    if current is not None:
        found.append(Mapping(*current))
    return found


def release_compile_memory() -> None:
    """Give back what bcc's compile leaves resident once the program is loaded and attached:

    - the C heap it freed: clang and LLVM build the program on the C heap and free most of it,
      but glibc keeps freed heap mapped; ``malloc_trim(0)`` returns it to the kernel (a no-op
      without glibc);
    - the pages of LLVM's and clang's libraries the compile touched (about 80 MiB of RSS), with
      each mapping's :attr:`Mapping.advice`. Pages the process changed stay (without swap).
      Kernels before 5.4 refuse MADV_PAGEOUT (EINVAL): those pages then stay, nothing else
      changes."""
    gc.collect()
    libc = ctypes.CDLL(None)
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    for mapping in compiler_mappings():
        libc.madvise(mapping.start, mapping.end - mapping.start, mapping.advice)


def _program_names(plan: ProbePlan) -> list[tuple[str, str]]:
    """(function name, bcc program type name) of every program the plan's compile holds."""
    names = [(f"tracepoint__{tp.replace(':', '__')}", "TRACEPOINT") for tp in plan.tracepoints]
    names += [(f"raw_tracepoint__{tp}", "RAW_TRACEPOINT") for tp in plan.raw_tracepoints]
    names += [(name, "KPROBE") for fn in plan.kprobes for name in kprobe_function_names(fn)]
    names += [(kprobe_function_names(fn)[0], "KPROBE") for fn in plan.entry_kprobes]
    return names


@contextlib.contextmanager
def _stderr_to(sink: IO[bytes]) -> Iterator[None]:
    """Send file descriptor 2 to ``sink`` meanwhile: clang and the verifier log write there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _reason(exc: Exception, log: IO[bytes]) -> str:
    """The first error line bcc wrote (clang, verifier), else the exception's."""
    log.seek(0)
    text = log.read().decode(errors="replace")
    for line in text.splitlines():
        if "error" in line.lower():
            return line.strip().replace("<built-in>:", "").strip()
    return _first_error_line(exc)


def verify_program(plan: ProbePlan, options: BuildOptions) -> tuple[int, float]:
    """Compile the plan's program and load each of its programs into the verifier, attaching
    nothing: (programs loaded, seconds taken). FusewbError with the first error otherwise."""
    from bcc import BPF  # noqa: PLC0415 - heavy, only when checking

    from fusewb.tracers.headers import prepare_bcc_environment  # noqa: PLC0415

    class _Unattached(BPF):
        def _trace_autoload(self) -> None:
            """bcc attaches TRACEPOINT_PROBE programs from its constructor; not here."""

    prepare_bcc_environment()
    programs = _program_names(plan)
    fix = "see the C with 'fusewb trace --ebpf'"
    began = time.monotonic()
    with tempfile.TemporaryFile() as log:
        try:
            with _stderr_to(log):
                bpf = _Unattached(text=ebpf_text(plan, options).encode(), cflags=cflags(plan, options))
        except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception for compile errors
            raise FusewbError(f"bcc cannot compile plan '{plan.name}': {_reason(exc, log)}", fix) from None
        try:
            for name, kind in programs:
                try:
                    with _stderr_to(log):
                        bpf.load_func(name.encode(), getattr(BPF, kind))
                except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception for verifier errors
                    raise FusewbError(
                        f"the verifier refuses {name} of plan '{plan.name}': {_reason(exc, log)}", fix
                    ) from None
        finally:
            bpf.cleanup()
    return len(programs), time.monotonic() - began


def kprobe_function_names(function: str) -> tuple[str, str]:
    """The entry and return program names of a probed kernel function (bpf/kprobes.bpf.c)."""
    return f"kp_{function}", f"kr_{function}"


def detach_probes(bpf: Any) -> None:
    """Detach every probe and keep the maps, so the in-kernel state read afterwards holds still
    (a request cannot end between reading the pending ones and the histograms)."""
    for event in list(bpf.kprobe_fds):
        bpf.detach_kprobe_event(event)
    for tracepoint in list(bpf.tracepoint_fds):
        bpf.detach_tracepoint(tracepoint)
    for tracepoint in list(bpf.raw_tracepoint_fds):
        bpf.detach_raw_tracepoint(tracepoint)


def attach_kprobes(bpf: Any, plan: ProbePlan) -> list[str]:
    """Attach the plan's kprobes and kretprobes (at the kallsyms name, a clone such as
    ``.part.0`` included); the probes attached (FusewbError if one fails).

    The kretprobe goes first: handlers at one address run newest first, so the entry kprobe
    takes its stack before the kretprobe swaps the return address for its trampoline, which
    unwinders before 5.15 cannot get past (5.10: every stack ended in kretprobe_trampoline)."""
    attached = []
    for function in [*plan.kprobes, *plan.entry_kprobes]:
        entry, ret = kprobe_function_names(function)
        symbol = plan.symbol(function)
        try:
            if function in plan.kprobes:
                bpf.attach_kretprobe(event=symbol, fn_name=ret)
                attached.append(f"kretprobe:{symbol}")
            bpf.attach_kprobe(event=symbol, fn_name=entry)
            attached.append(f"kprobe:{symbol}")
        except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception
            raise FusewbError(
                f"cannot attach kprobe on {function} ({_first_error_line(exc)})",
                "use the tracepoint plan (fusewb trace --plan tracepoint)",
            ) from None
    return attached
