"""The one place that decides whether a kernel test may skip.

A kernel test calls :func:`require` with a condition and a named reason. Without
``FUSEWB_REQUIRE_KERNEL=1`` a missing feature skips the test with that reason; with it (CI sets
it) the same call fails the test, so no skip can hide a missing feature.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

__all__ = ["SIGHUP_DEFAULT", "TIMEOUT_SCALE", "require", "require_root", "require_fuse", "require_bpf", "require_cgroup_memory"]

# A command prefix that starts a child with SIGHUP at its default action: a test that hangs a
# child up must not depend on how pytest itself was started (under nohup SIGHUP is ignored,
# and an ignored signal stays ignored across exec).
SIGHUP_DEFAULT = ("env", "--default-signal=HUP")

# How much slower this machine runs than the one the tests' waits were sized on: fusewb.guest
# sets it for a TCG guest (~6x). Every bounded wait of a kernel test is multiplied by it.
TIMEOUT_SCALE = float(os.environ.get("FUSEWB_TIMEOUT_SCALE", "1") or 1)


def require(condition: bool, reason: str) -> None:
    """Skip (or, under FUSEWB_REQUIRE_KERNEL=1, fail) unless ``condition`` holds."""
    if condition:
        return
    if os.environ.get("FUSEWB_REQUIRE_KERNEL") == "1":
        pytest.fail(f"kernel requirement not met (FUSEWB_REQUIRE_KERNEL=1): {reason}")
    pytest.skip(reason)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root")


def require_fuse() -> None:
    require_root()
    require(Path("/dev/fuse").exists(), "needs /dev/fuse")
    require(shutil.which("fusermount3") is not None, "needs fusermount3 (Debian fuse3)")


def require_bpf() -> None:
    require_root()
    try:
        import bcc  # noqa: F401
    except ImportError:
        require(False, "needs bcc (Debian python3-bpfcc) importable")
    require(Path("/sys/kernel/btf/vmlinux").exists(), "needs BTF at /sys/kernel/btf/vmlinux")


def require_cgroup_memory() -> None:
    require_root()
    v1 = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
    v2 = any(
        "memory" in p.read_text().split()
        for p in Path("/sys/fs/cgroup").glob("**/cgroup.controllers")
        if p.parent.parent == Path("/sys/fs") or p.parent == Path("/sys/fs/cgroup/unified")
    )
    require(v1 or v2, "needs a memory cgroup controller (v1 or v2)")
