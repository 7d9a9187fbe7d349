"""One worker of the paced STATFS load: ``fstatvfs`` on a file of a FUSE mount at a set rate
(each call is one FUSE STATFS request, never cached), counting its calls.

Starts at a given ``CLOCK_MONOTONIC`` time so several workers begin together; calls go in 1 ms
batches, sleeping to the schedule, catching up at most 100 ms when late. Prints
``{"calls": N, "seconds": S, "tgid": PID}``::

    python -m bench.statfs_load /mnt/f/file --rate 50000 --seconds 10
"""

from __future__ import annotations

import json
import os
import time

import click
from fusewb.command import Command

__all__ = ["main", "paced_calls"]

BATCH_S = 0.001
MAX_BEHIND_S = 0.1


def paced_calls(fd: int, rate: float, seconds: float) -> tuple[int, float]:
    """``fstatvfs(fd)`` at ``rate`` per second for ``seconds``; (calls, elapsed seconds)."""
    batch = max(1, round(rate * BATCH_S))
    interval = batch / rate
    calls = 0
    start = time.monotonic()
    end = start + seconds
    due = start
    now = start
    while now < end:
        for _ in range(batch):
            os.fstatvfs(fd)
        calls += batch
        due += interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
            now = time.monotonic()
        elif now - due > MAX_BEHIND_S:
            due = now - MAX_BEHIND_S
    return calls, time.monotonic() - start


@click.command(cls=Command)
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--rate", type=float, required=True, help="Calls per second.")
@click.option("--seconds", type=float, required=True)
@click.option("--start-at-ns", type=int, default=0, help="CLOCK_MONOTONIC time to begin at.")
def main(path: str, rate: float, seconds: float, start_at_ns: int) -> None:
    """Issue fstatvfs on PATH at RATE per second for SECONDS; print the count as JSON.

    \b
    Examples:
      python -m bench.statfs_load /mnt/f/file --rate 50000 --seconds 10
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        wait = (start_at_ns - time.clock_gettime_ns(time.CLOCK_MONOTONIC)) / 1e9
        if wait > 0:
            time.sleep(wait)
        calls, elapsed = paced_calls(fd, rate, seconds)
    finally:
        os.close(fd)
    click.echo(json.dumps({"calls": calls, "seconds": elapsed, "tgid": os.getpid()}))


if __name__ == "__main__":
    main()
