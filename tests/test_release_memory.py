"""``release_compile_memory`` (called by ``Tracer.start`` once the program is loaded) returns freed
C heap to the kernel, measured on a heap freed the way bcc's compile leaves it, and the pages of
LLVM's and clang's libraries that a real compile touched, measured by smaps; each in a
subprocess."""

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
    starts = {m.start: m.perms for m in compiler_mappings()}
    total = {"code": 0, "Private_Clean": 0, "Shared_Clean": 0}
    perms = None
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            perms = starts.get(int(head.split("-")[0], 16))
        elif perms is not None and head[:-1] in total:
            total[head[:-1]] += int(line.split()[1])
        elif perms == "r-xp" and head == "Rss:":
            total["code"] += int(line.split()[1])
    return total

prepare_bcc_environment()
BPF(text=b"int nothing(void *ctx) { return 0; }").cleanup()
before = compiler_kib()
release_compile_memory()
after = compiler_kib()
print(len(compiler_mappings()), before["code"], before["Private_Clean"] + before["Shared_Clean"],
      after["code"], after["Private_Clean"], before["Private_Clean"])
"""


def _probe() -> list[int]:
    done = subprocess.run([sys.executable, "-c", PAGEOUT_PROBE], capture_output=True, text=True,
                          timeout=120, check=True)
    return [int(x) for x in done.stdout.split()[-6:]]


def test_the_compilers_pages_go_back_after_the_compile() -> None:
    """The compiler's code pages leave the process (MADV_DONTNEED) and its other clean pages
    that no other process maps are reclaimed (MADV_PAGEOUT), by the kernel's smaps. The test
    runner maps LLVM and clang too (it imported bcc), as another bcc tool on a host would: the
    code pages go all the same."""
    from tests.support import require_bpf

    require_bpf()
    mappings, code_before, clean_before, code_after, private_after, private_before = _probe()
    case = (f"{mappings} mappings, code {code_before} -> {code_after} KiB, "
            f"private clean {private_before} -> {private_after} KiB")
    assert mappings >= 2, case  # libLLVM and libclang-cpp, each several mappings
    assert code_before >= 10 * 1024 and clean_before >= 20 * 1024, case  # the compile ran them
    assert code_after <= 1024, case
    assert private_after <= private_before // 10 + 1024, case
