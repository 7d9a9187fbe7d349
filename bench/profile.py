"""Where a Python process spends its time: sample it with py-spy (test extra) while a workload
runs, then name the functions of fusewb that hold the largest shares (inclusive)."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["PySpy", "hot_functions"]

RATE_HZ = 100


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class PySpy:
    """``py-spy record`` of ``pid`` for ``seconds`` into ``output`` (raw, collapsed stacks);
    does nothing when py-spy is not installed (``available`` is False)."""

    def __init__(self, pid: int, seconds: float, output: Path) -> None:
        self.output = output
        binary = _py_spy()
        self.available = binary is not None
        self.process: subprocess.Popen | None = None
        if binary is not None:
            self.process = subprocess.Popen(
                [binary, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r",
                 str(RATE_HZ), "-f", "raw", "-o", str(output), "--nonblocking"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )

    def finish(self, timeout: float = 30.0) -> list[str]:
        """Wait for the recording; the hot functions as lines (empty without py-spy)."""
        if self.process is None:
            return []
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        return hot_functions(self.output)


def hot_functions(raw: Path, top: int = 6, within: tuple[str, ...] = ("tracers/", "bcc/",
                                                                       "pyarrow/")) -> list[str]:
    """Inclusive share of samples of the busiest functions in ``within`` files, from py-spy's
    raw output (``frame;frame;... count`` per line), as ``"43% Tracer._flush (tracers/...)"``."""
    try:
        lines = raw.read_text().splitlines()
    except OSError:
        return []
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            path = where.split(":", 1)[0]
            if not path.startswith(within):
                continue
            key = f"{name} ({path})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += int(count)
    if not total:
        return []
    return [f"{n / total * 100:.0f}% {key}" for key, n in inclusive.most_common(top)]
