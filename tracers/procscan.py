"""Tasks already asleep in a kernel function, from ``/proc/*/task/*/stack`` (root only).

The tracepoint plan sees a writeback wait begin at its tracepoint; a task that went to sleep
before tracing started (a server that stopped answering an hour ago) is found here instead.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["blocked_in"]

PROC = Path("/proc")


def _frames(stack_text: str) -> list[str]:
    """``[<0>] folio_wait_bit+0xd6/0x220`` lines -> function names, innermost first."""
    out = []
    for line in stack_text.splitlines():
        name = line.split("] ", 1)[-1].split("+", 1)[0].strip()
        if name:
            out.append(name)
    return out


def blocked_in(function: str, proc: Path = PROC) -> list[dict]:
    """Every task in uninterruptible sleep (D) whose kernel stack holds ``function``:
    ``{pid, tgid, comm, frames}`` (pid = thread id)."""
    found = []
    for task in proc.glob("[0-9]*/task/[0-9]*"):
        try:
            stat = (task / "stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            if state != "D":
                continue
            frames = _frames((task / "stack").read_text())
            comm = (task / "comm").read_text().strip()
        except (OSError, IndexError):
            continue  # the task exited, or no permission
        if function in frames:
            found.append({"pid": int(task.name), "tgid": int(task.parent.parent.name),
                          "comm": comm, "frames": frames})
    return found
