"""Run a command and report its own wall time and peak RSS, from a small process.

Linux carries a process's peak RSS across ``execve`` (and a vforked child shares its parent's
memory until then), so a command started straight from the bench, whose process holds large
arrays, would report at least the bench's own peak. Started from this small launcher instead,
the command's ``ru_maxrss`` is its own. Prints ``{"seconds": S, "max_rss_bytes": N,
"returncode": RC, "stderr": "..."}``::

    python -m bench.child_rusage -- fusewb analyze cap/ --format json -o /dev/null
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``argv`` (after ``--``) to completion; print its measurements as JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m bench.child_rusage -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    began = time.monotonic()
    child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    assert child.stderr is not None
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    json.dump({"seconds": time.monotonic() - began, "max_rss_bytes": usage.ru_maxrss * 1024,
               "returncode": child.returncode,
               "stderr": stderr.decode(errors="replace")[-2000:]}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
