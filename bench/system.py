"""The machine the bench runs on (for RESULTS.md), what the bench needs from it, and the
settings every part receives."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fusewb.contract.errors import FusewbError
from fusewb.tracers.features import tracefs_root

__all__ = ["Settings", "machine", "require_tools", "ensure_tracefs", "REPO_ROOT", "bench_env"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """What every part gets: quick or full, repetitions, a scratch folder of its own."""

    quick: bool
    repetitions: int
    workdir: Path

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _debian_version() -> str:
    try:
        return Path("/etc/debian_version").read_text().strip()
    except OSError:
        return "?"


def machine() -> dict[str, str]:
    """Kernel, CPU model, cores, memory, distribution, tool versions."""

    def version(args: list[str]) -> str:
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "missing"
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"

    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": f"{_memory_gib():.1f} GiB",
        "os": f"Debian {_debian_version()}",
        "python": platform.python_version(),
        "fio": version(["fio", "--version"]),
        "bindfs": version(["bindfs", "--version"]),
        "bpftrace": version(["bpftrace", "--version"]),
        "perf": version(["perf", "--version"]),
    }


def require_tools(*names: str) -> None:
    """FusewbError naming the first missing program among ``names`` (and root)."""
    if os.geteuid() != 0:
        raise FusewbError("the bench needs root (FUSE mounts, BPF, perf)", "run it with sudo")
    for name in names:
        if shutil.which(name) is None:
            raise FusewbError(f"the bench needs {name}", f"apt-get install {name}")


def ensure_tracefs() -> None:
    """Mount tracefs if it is not (perf and bpftrace read tracepoint formats there)."""
    tracefs_root(mount=True)


def bench_env() -> dict[str, str]:
    """The environment for helper processes of the bench: ``bench`` importable from anywhere."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env
