"""A clean Debian root for the production-install test: debootstrap's minimal system from this
machine's own Debian archive, and commands run inside it as root on this kernel.

Each command runs in a mount namespace of its own (``unshare --mount``) in which /proc, /sys and
/dev are mounted into the root before ``chroot``: when the command ends, for whatever reason,
the namespace and every mount in it go with it, so nothing is left mounted. A FUSE mount that a
test makes inside the root from this side is seen inside (the namespace is a copy).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CleanRoot", "debian_archive", "debian_codename"]

SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def debian_codename() -> str:
    """This machine's Debian release name (``VERSION_CODENAME`` of /etc/os-release)."""
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=(\w+)", text, re.M)
    if not match or not re.search(r"^ID=debian$", text, re.M):
        raise RuntimeError("not a Debian machine (/etc/os-release): the clean root is built from Debian's archive")
    return match[1]


def debian_archive() -> str:
    """The address of the Debian archive this machine's apt uses (its first ``deb`` source)."""
    for path in SOURCES:
        if not path.exists():
            continue
        text = path.read_text()
        deb822 = re.search(r"^URIs:\s*(\S+)", text, re.M)
        if deb822:
            return deb822[1]
        one_line = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
        if one_line:
            return one_line[1]
    raise RuntimeError("no Debian archive in this machine's apt sources")


@dataclass
class CleanRoot:
    """A minimal Debian root at ``path``, and what building it took (seconds, MiB)."""

    path: Path
    seconds: dict[str, float] = field(default_factory=dict)
    mib: dict[str, float] = field(default_factory=dict)

    def build(self, packages: list[str], timeout: float = 900) -> None:
        """debootstrap's minbase system, then ``apt-get install packages`` inside it."""
        start = time.monotonic()
        done = subprocess.run(["debootstrap", "--variant=minbase", debian_codename(), str(self.path),
                               debian_archive()], capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"debootstrap failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        self.seconds["debootstrap"] = time.monotonic() - start
        self.mib["base"] = self.size_mib()
        shutil.copyfile("/etc/resolv.conf", self.path / "etc/resolv.conf")
        start = time.monotonic()
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
            done = self.run(argv, timeout=timeout, env={"DEBIAN_FRONTEND": "noninteractive"})
            assert done.returncode == 0, f"{' '.join(argv)} in the clean root: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        self.seconds["apt-get install"] = time.monotonic() - start
        self.mib["packages"] = self.size_mib() - self.mib["base"]

    def size_mib(self, relative: str = ".") -> float:
        out = subprocess.run(["du", "-sxm", str(self.path / relative)], capture_output=True,
                             text=True, timeout=120, check=True).stdout
        return float(out.split()[0])

    def command(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """``argv`` as run inside the root: its own mount namespace, /proc, /sys and /dev
        mounted there, a clean environment."""
        root = str(self.path)
        setup = (f"mount -t proc proc {root}/proc && mount --rbind /sys {root}/sys && "
                 f"mount --rbind /dev {root}/dev && exec chroot {root} \"$@\"")
        variables = [f"{k}={v}" for k, v in {"PATH": INSIDE_PATH, "HOME": "/root", "LANG": "C.UTF-8",
                                            **(env or {})}.items()]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh",
                "/usr/bin/env", "-i", *variables, *argv]

    def run(self, argv: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv, env), capture_output=True, text=True, timeout=timeout)

    def popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv), **kwargs)

    def remove(self) -> None:
        """Remove the root; refuses while anything is mounted below it (a FUSE mount not yet
        unmounted), so nothing mounted is ever deleted through."""
        mounted = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                   if line.split()[4].startswith(str(self.path) + "/")]
        assert not mounted, f"still mounted in the clean root: {mounted}"
        shutil.rmtree(self.path, ignore_errors=True)
