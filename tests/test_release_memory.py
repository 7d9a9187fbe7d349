"""``release_compile_memory`` (called by ``Tracer.start`` once the program is loaded) returns freed
C heap to the kernel: measured on a heap freed the way bcc's compile leaves it, in a subprocess."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import ctypes
from fusewb.tracers.program import release_compile_memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(65536) for _ in range(2000)]  # 125 MiB of heap (below mmap's threshold)
for block in blocks:
    ctypes.memset(block, 1, 65536)
for block in blocks[:-1]:  # the last one pins the heap's top: free() alone cannot shrink it
    libc.free(block)
before = rss_mib()
release_compile_memory()
print(before, rss_mib())
"""


def test_freed_heap_goes_back_to_the_kernel() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=60, check=True)
    before, after = map(int, done.stdout.split())
    assert before - after >= 100, f"RSS {before} MiB before, {after} MiB after"


PAGEOUT_PROBE = """
from bcc import BPF
from fusewb.tracers.headers import prepare_bcc_environment
from fusewb.tracers.program import compiler_mappings, release_compile_memory

def compiler_kib():
    spans = compiler_mappings()
    total = {"Private_Clean": 0, "Shared_Clean": 0}
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and ":" not in head:
            start = int(head.split("-")[0], 16)
            inside = any(start == s for s, _ in spans)
        elif inside and head[:-1] in total:
            total[head[:-1]] += int(line.split()[1])
    return total

prepare_bcc_environment()
BPF(text=b"int nothing(void *ctx) { return 0; }").cleanup()
before = compiler_kib()
release_compile_memory()
after = compiler_kib()
print(len(compiler_mappings()), before["Private_Clean"], before["Shared_Clean"], after["Private_Clean"])
"""


def test_the_compilers_pages_go_back_after_the_compile() -> None:
    """The clean pages of LLVM's and clang's libraries that a compile touched and that no other
    process maps (smaps Private_Clean) are reclaimed by MADV_PAGEOUT; pages another process maps
    too (Shared_Clean, e.g. a test runner that imported bcc) are left alone by the kernel."""
    from tests.support import require_bpf

    require_bpf()
    done = subprocess.run([sys.executable, "-c", PAGEOUT_PROBE], capture_output=True, text=True,
                          timeout=120, check=True)
    mappings, private_before, shared_before, private_after = map(int, done.stdout.split()[-4:])
    assert mappings >= 2, done.stdout  # libLLVM and libclang-cpp, each several mappings
    assert private_before + shared_before >= 20 * 1024, done.stdout  # the compile ran their code
    assert private_after <= private_before // 10 + 1024, done.stdout
