"""Compile fusewb's BPF sources (``bpf/``) for a probe plan with bcc, attach what bcc does not
attach by itself (kprobes), and render the C for ``fusewb trace --ebpf``.

bcc attaches ``TRACEPOINT_PROBE`` and ``RAW_TRACEPOINT_PROBE`` programs when it loads them;
``BPF.cleanup()`` detaches everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusewb.bpf import source_dir
from fusewb.errors import FusewbError
from fusewb.tracers.plan import ProbePlan

if TYPE_CHECKING:
    from bcc import BPF

__all__ = ["BPF_DIR", "MAIN_SOURCE", "DEFAULT_RING_PAGES", "BuildOptions", "cflags", "ebpf_text", "compile_program",
           "attach_kprobes", "kprobe_function_names"]

BPF_DIR = source_dir()
MAIN_SOURCE = BPF_DIR / "fusewb.bpf.c"
_LOCAL_INCLUDE = re.compile(r'^#include "([\w.]+)"\s*$', re.M)


# Ring buffer size: 16 MiB. The ring is drained every 100 ms and not while a second's Parquet
# parts are written (~0.2-0.3 s per 100,000 rows), so at 100,000 events/s it must hold some
# 40,000 events (~4 MiB); 1 MiB lost events from ~50,000/s (bench/RESULTS.md, events part).
DEFAULT_RING_PAGES = 4096


@dataclass(frozen=True)
class BuildOptions:
    """Compile-time options besides the plan: ring size, pid filter, map sizes."""

    ring_pages: int = DEFAULT_RING_PAGES
    filter_tgid: int = 0
    max_pending: int = 16384
    max_inflight: int = 65536
    stack_entries: int = 4096
    request_events_per_sec: int = 20000  # per CPU; faster requests beyond it are only summed

    def defines(self) -> dict[str, str]:
        if self.ring_pages < 1 or self.ring_pages & (self.ring_pages - 1):
            raise FusewbError(f"--ring-pages {self.ring_pages} is not a power of two", "use 1, 2, 4, ... 4096")
        return {
            "RING_PAGES": str(self.ring_pages),
            "FILTER_TGID": str(self.filter_tgid),
            "MAX_PENDING": str(self.max_pending),
            "MAX_INFLIGHT": str(self.max_inflight),
            "STACK_ENTRIES": str(self.stack_entries),
            "REQ_EVENTS_PER_SEC": str(self.request_events_per_sec),
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
    from bcc import BPF  # noqa: PLC0415 - heavy, only when tracing

    from fusewb.tracers.headers import prepare_bcc_environment  # noqa: PLC0415

    prepare_bcc_environment()
    try:
        return BPF(text=ebpf_text(plan, options).encode(), cflags=cflags(plan, options))
    except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception for compile/attach errors
        raise FusewbError(
            f"bcc could not compile or attach fusewb's BPF program ({_first_error_line(exc)})",
            "run 'fusewb doctor' and 'fusewb trace --ebpf' to see the plan and the C",
        ) from None


def kprobe_function_names(function: str) -> tuple[str, str]:
    """The entry and return program names of a probed kernel function (bpf/kprobes.bpf.c)."""
    return f"kp_{function}", f"kr_{function}"


def attach_kprobes(bpf: Any, plan: ProbePlan) -> list[str]:
    """Attach the plan's kprobes and kretprobes; the probes attached (FusewbError if one fails)."""
    attached = []
    for function in plan.kprobes:
        entry, ret = kprobe_function_names(function)
        try:
            bpf.attach_kprobe(event=function, fn_name=entry)
            attached.append(f"kprobe:{function}")
            bpf.attach_kretprobe(event=function, fn_name=ret)
            attached.append(f"kretprobe:{function}")
        except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception
            raise FusewbError(
                f"cannot attach kprobe on {function} ({_first_error_line(exc)})",
                "use the tracepoint plan (fusewb trace --plan tracepoint)",
            ) from None
    return attached
