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
