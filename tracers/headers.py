"""The kernel header tree bcc compiles against.

Order of preference: the running kernel's own build tree (``/lib/modules/$(uname -r)/build``),
the kernel's ``/sys/kernel/kheaders.tar.xz`` (bcc unpacks it itself), else a fallback tree
assembled from Debian's ``linux-headers-*-common`` and ``-amd64`` packages in a cache folder of
ours, else the headers ``make dist`` bundled into the package (``bpf/kernel-include``, only the
files fusewb's program includes, for this machine's architecture); the last two are passed to
bcc as ``BCC_KERNEL_SOURCE``, nothing is written into /lib/modules.

The fallback and bundled trees come from another kernel version, so fusewb's BPF programs only
use them for macros, helper declarations and uapi enums (``enum fuse_opcode``); struct layouts
come from tracefs formats or from BTF offsets passed in as defines.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from fusewb.bpf import source_dir
from fusewb.contract.errors import FusewbError
from fusewb.contract.extras import HEADERS_FIX

__all__ = ["HeaderTree", "BUNDLED", "BUNDLED_SOURCE_FILE", "cache_root", "find_header_tree",
           "kernel_arch", "prepare_bcc_environment"]

DEBIAN_SRC = Path("/usr/src")
# The headers fusewb's program includes, copied into the package by make dist
# (scripts/bundle_headers.py); the tree they came from is named in BUNDLED_SOURCE_FILE.
BUNDLED = source_dir() / "kernel-include"
BUNDLED_SOURCE_FILE = "SOURCE"
KHEADERS = Path("/sys/kernel/kheaders.tar.xz")


@dataclass(frozen=True)
class HeaderTree:
    """Where bcc's headers come from. ``kind`` is running-kernel, kheaders, debian-fallback or
    bundled."""

    kind: str
    path: Path
    note: str

    @property
    def matches_kernel(self) -> bool:
        return self.kind in ("running-kernel", "kheaders")


def cache_root() -> Path:
    base = os.environ.get("FUSEWB_CACHE")
    if base:
        return Path(base)
    if os.geteuid() == 0:
        return Path("/var/cache/fusewb")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fusewb"


def kernel_arch() -> str:
    """The kernel's name for this machine's architecture (its arch/ folder)."""
    return {"x86_64": "x86", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _debian_pair() -> tuple[Path, Path] | None:
    """The newest installed (common, arch) pair of Debian header folders for this architecture."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    candidates = sorted(DEBIAN_SRC.glob(f"linux-headers-*-{arch}"), reverse=True)
    for arch_dir in candidates:
        common = arch_dir.with_name(arch_dir.name[: -len(arch)] + "common")
        if (arch_dir / "include" / "generated").is_dir() and (common / "include" / "linux").is_dir():
            return common, arch_dir
    return None


def _link_children(src: Path, dst: Path, skip: set[str] = frozenset()) -> None:
    for entry in src.iterdir():
        if entry.name in skip:
            continue
        link = dst / entry.name
        if not link.is_symlink() and not link.exists():
            link.symlink_to(entry)


def _assemble(common: Path, arch_dir: Path, dest: Path) -> None:
    """Merge Debian's split trees with symlinks: common sources plus the arch's generated files."""
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    karch = kernel_arch()
    (tmp / "include").mkdir(parents=True, exist_ok=True)
    (tmp / "arch" / karch / "include").mkdir(parents=True, exist_ok=True)
    _link_children(common, tmp, {"include", "arch"})
    _link_children(common / "include", tmp / "include")
    _link_children(arch_dir / "include", tmp / "include")
    _link_children(common / "arch", tmp / "arch", {karch})
    _link_children(common / "arch" / karch, tmp / "arch" / karch, {"include"})
    _link_children(common / "arch" / karch / "include", tmp / "arch" / karch / "include")
    _link_children(arch_dir / "arch" / karch / "include", tmp / "arch" / karch / "include")
    (tmp / ".config").symlink_to(arch_dir / ".config")
    tmp.rename(dest)


def find_header_tree(build: bool = True) -> HeaderTree | None:
    """Pick the header tree; with ``build`` assemble the Debian fallback tree if it is needed."""
    release = platform.release()
    own = Path("/lib/modules") / release / "build"
    if (own / "include" / "linux").is_dir():
        return HeaderTree("running-kernel", own, f"headers of {release} itself")
    if KHEADERS.exists():
        return HeaderTree("kheaders", KHEADERS, "bcc unpacks the kernel's own kheaders archive")
    pair = _debian_pair()
    if pair is None:
        if (BUNDLED / "include" / "linux").is_dir() and (BUNDLED / "arch" / kernel_arch()).is_dir():
            source = (BUNDLED / BUNDLED_SOURCE_FILE).read_text().strip()
            return HeaderTree("bundled", BUNDLED, f"the headers fusewb's program includes, bundled "
                              f"by make dist ({source}): macros and uapi enums only, struct "
                              "offsets from BTF")
        return None
    common, arch_dir = pair
    version = arch_dir.name.removeprefix("linux-headers-")
    dest = cache_root() / "kernel-tree" / version
    if build and not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _assemble(common, arch_dir, dest)
    return HeaderTree(
        "debian-fallback",
        dest,
        f"Debian {version} headers for kernel {release}: macros and uapi enums only, "
        "struct offsets from BTF",
    )


def prepare_bcc_environment() -> HeaderTree:
    """Point bcc at the header tree (``BCC_KERNEL_SOURCE`` for the Debian fallback and the
    bundled headers) and return it."""
    tree = find_header_tree(build=True)
    if tree is None:
        raise FusewbError(
            "no kernel headers for bcc: no /lib/modules/$(uname -r)/build, no "
            "/sys/kernel/kheaders.tar.xz, no Debian linux-headers package, and no headers "
            f"bundled for {kernel_arch()} (make dist bundles its own machine's)",
            HEADERS_FIX,
        )
    if tree.kind in ("debian-fallback", "bundled"):
        os.environ["BCC_KERNEL_SOURCE"] = str(tree.path)
    return tree
