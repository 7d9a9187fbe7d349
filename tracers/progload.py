"""Whether the running kernel loads a BPF program of a given type: a real ``bpf(BPF_PROG_LOAD)``
of the smallest program (``r0 = 0; exit``), through the syscall itself.

This is the evidence ``bpftool feature probe`` gives, without bpftool: a production host has the
distribution's bcc and nothing else (README, "On a production host"). A refused load is told
with its errno and the verifier's last line; a loaded program is closed at once. fentry needs the
BTF id of the function it would trace (``attach_btf_id``), so the kernel checks the target too
(this machine's 6.18 refuses it with EPERM: no fentry here, as bpftool says).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

__all__ = ["PROG_TYPES", "BPF_TRACE_FENTRY", "load_smallest"]

# enum bpf_prog_type and enum bpf_attach_type values (include/uapi/linux/bpf.h; stable ABI)
PROG_TYPES = {"kprobe": 2, "raw_tracepoint": 17, "tracing": 26}
BPF_TRACE_FENTRY = 24
_BPF_PROG_LOAD = 5
_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280}
# union bpf_attr for BPF_PROG_LOAD: the byte offsets of the fields set here
_ATTR_SIZE = 128  # past attach_btf_obj_fd; the kernel requires the rest to be zero
_OFF_EXPECTED_ATTACH_TYPE = 68
_OFF_ATTACH_BTF_ID = 108
_PROGRAM = bytes.fromhex("b700000000000000" "9500000000000000")  # mov64 r0, 0; exit
_LOG_SIZE = 4096


def load_smallest(prog_type: str, attach_type: int = 0, attach_btf_id: int = 0,
                  label: str | None = None) -> tuple[bool, str]:
    """Load the smallest program of ``prog_type`` (a key of :data:`PROG_TYPES`) and close it:
    (loaded, evidence in words, naming the program ``label``, else its type)."""
    label = label or prog_type
    number = _SYSCALL_BPF.get(platform.machine())
    if number is None:
        return False, f"unknown: no bpf(2) syscall number known for {platform.machine()}"
    insns = ctypes.create_string_buffer(_PROGRAM, len(_PROGRAM))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(_LOG_SIZE)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIQQIIQ", attr, 0, PROG_TYPES[prog_type], len(_PROGRAM) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license_), 1, _LOG_SIZE,
                     ctypes.addressof(log))
    struct.pack_into("<I", attr, _OFF_EXPECTED_ATTACH_TYPE, attach_type)
    struct.pack_into("<I", attr, _OFF_ATTACH_BTF_ID, attach_btf_id)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(number, _BPF_PROG_LOAD, attr, _ATTR_SIZE)
    if fd >= 0:
        os.close(fd)
        return True, f"test load of a {label} program: ok"
    err = ctypes.get_errno()
    said = log.value.decode(errors="replace").strip().splitlines()
    why = f"{errno.errorcode.get(err, err)}" + (f", verifier: {said[-1]}" if said else "")
    return False, f"test load of a {label} program: refused ({why})"
