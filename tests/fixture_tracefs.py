"""A minimal in-test observation of where the kernel waits on FUSE writeback.

``WritebackWaits(bdi)`` opens a private tracefs instance with ``writeback:folio_wait_writeback``
filtered to one bdi and kernel stacks on; on exit it holds each hit's stack. The fixture and load
tests use it as an observation independent of fusewb's own tracer (the kernel's ftrace, not BPF).
"""

from __future__ import annotations

import os

from fusewb.tracers.features import tracefs_root

__all__ = ["WritebackWaits", "tracefs_root"]

EVENT = "writeback/folio_wait_writeback"


class WritebackWaits:
    """Kernel stacks of folio_wait_writeback hits on ``bdi`` while the context is open."""

    def __init__(self, bdi: str) -> None:
        root = tracefs_root()
        if root is None:
            raise RuntimeError("tracefs is not available")
        self.instance = root / "instances" / f"fusewb-test-{os.getpid()}"
        self.bdi = bdi
        self.stacks: list[list[str]] = []

    def __enter__(self) -> "WritebackWaits":
        self.instance.mkdir()
        try:
            (self.instance / "buffer_size_kb").write_text("4096")
            (self.instance / "events" / EVENT / "filter").write_text(f'name == "{self.bdi}"')
            (self.instance / "options" / "stacktrace").write_text("1")
            (self.instance / "events" / EVENT / "enable").write_text("1")
        except OSError:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            (self.instance / "events" / EVENT / "enable").write_text("0")
            self.stacks = self._parse((self.instance / "trace").read_text())
        finally:
            self._remove()

    def _remove(self) -> None:
        for _ in range(50):
            try:
                self.instance.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                (self.instance / "events" / EVENT / "enable").write_text("0")

    @staticmethod
    def _parse(text: str) -> list[list[str]]:
        stacks: list[list[str]] = []
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            if "folio_wait_writeback:" in line:
                stacks.append([])
            elif line.startswith(" => ") and stacks:
                stacks[-1].append(line[4:].split("+")[0].strip())
        return stacks

    def hits(self, function: str | None = None) -> int:
        """Hits whose stack contains ``function`` (all hits without one)."""
        return sum(1 for s in self.stacks if function is None or function in s)
