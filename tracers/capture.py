"""Writing a capture directory (format: :mod:`fusewb.contract.schema`).

Rows are buffered per table and written as numbered Parquet parts (temporary name, then
``os.replace``), so a reader, or a ``kill -9`` of the tracer, only ever sees complete parts.
``meta.json`` is rewritten the same way at each flush (``complete: false``) and at the end.
Everything is created owner-only: the directory 0700, files 0600 (task names, paths).

One writer per directory: it holds ``flock`` on the directory while open, so a second tracer
given the same ``-o`` is refused instead of overwriting the first one's parts.

Bounded size (``max_size``, ``fusewb trace --max-size``): after each flush, the oldest parts are
deleted until the parts and ``meta.json`` fit in ``max_size`` bytes; what was dropped is counted
per table in ``meta.json`` ``dropped`` (parts, rows, bytes, and the last event time they held).
Two kinds of part are never dropped: the parts of the flush just written (the newest data, so
the capture may exceed ``max_size`` by one flush, about a second of events) and ``stacks`` parts
(later waits refer to a stack by its id; a stack is written once).

Free space: :meth:`CaptureWriter.low_on_space` says when the capture's file system has less than
:attr:`CaptureWriter.reserve` bytes left for unprivileged writers (``statvfs`` ``f_bavail``),
so a tracer can stop and close the capture whole before the file system is full.

A write that fails (file system full, I/O error, directory removed) removes its temporary file
and raises :class:`CaptureWriteError`. The writer is then *failed*: :meth:`CaptureWriter.close`
writes no more parts and only tries to leave ``meta.json`` saying ``complete: false``, and
:meth:`CaptureWriter.failure_error` says what happened and what was kept, in one line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.parquet as pq

from fusewb.contract.errors import FusewbError
from fusewb.contract.schema import SCHEMA_VERSION, TABLES, part_name
from fusewb.tracers.arrow_rows import table_from_rows

__all__ = ["CaptureWriter", "CaptureWriteError", "WriteFailure", "META_FILE", "MIN_MAX_SIZE"]

META_FILE = "meta.json"
MIN_MAX_SIZE = 1 << 20  # --max-size below this would drop parts at every flush
# Free space kept on the capture's file system: this share of it, within the bounds below, plus
# four times the biggest part written (the final flush writes about one flush of parts).
RESERVE_SHARE = 0.02
RESERVE_MIN = 256 << 10
RESERVE_MAX = 256 << 20
_UNDROPPABLE = ("stacks",)

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class _Part:
    """A part on disk: its table, file, rows, bytes, the latest event time in it, its flush."""

    table: str
    path: Path
    rows: int
    size: int
    last_ns: int | None
    flush: int


def _last_ns(rows: list[dict[str, Any]]) -> int | None:
    """The latest event time among ``rows``: begin (ts_ns or send_ts_ns) plus duration."""
    times = [(row.get("ts_ns") or row.get("send_ts_ns") or 0) + (row.get("duration_ns") or 0)
             for row in rows]
    return max(times) if times and max(times) > 0 else None


class CaptureWriteError(FusewbError):
    """Writing the capture failed; tracing has to stop (exit 2)."""


@dataclass(frozen=True)
class WriteFailure:
    """The first write of a capture that failed: its errno and the file, relative to the capture."""

    errno: int | None
    strerror: str
    relative: str


def _open_private(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass  # already gone with its directory, or the file system refuses even that


def _lock_directory(directory: Path) -> int:
    """An fd of ``directory`` holding its exclusive ``flock`` (released when closed or at exit)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise FusewbError(f"cannot open capture directory {directory}: {exc.strerror}",
                          "choose a writable -o directory") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FusewbError(f"another fusewb trace is writing a capture to {directory}",
                          "choose another -o directory") from None
    except OSError as exc:
        os.close(fd)
        raise FusewbError(f"cannot lock capture directory {directory}: {exc.strerror}",
                          "choose another -o directory") from None
    return fd


class CaptureWriter:
    """Buffers rows per table and writes Parquet parts and ``meta.json`` into ``directory``."""

    @staticmethod
    def check_new(directory: Path) -> None:
        """FusewbError if ``directory`` already holds a capture (never overwrite one)."""
        if (Path(directory) / META_FILE).exists():
            raise FusewbError(
                f"{directory} already holds a capture", "choose another -o directory or remove it"
            )

    def __init__(self, directory: Path, meta: dict[str, Any], max_size: int | None = None) -> None:
        self.directory = Path(directory)
        self.max_size = max_size
        self.check_new(self.directory)
        existed = self.directory.exists()
        self._make_directories()
        self._lock: int | None = _lock_directory(self.directory)
        self.meta: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **meta, "complete": False}
        self.rows: dict[str, list[dict[str, Any]]] = {table: [] for table in TABLES}
        self.parts: dict[str, int] = {table: 0 for table in TABLES}
        self.written: dict[str, int] = {table: 0 for table in TABLES}
        self.failure: WriteFailure | None = None
        self.final_meta_written = False
        self.on_disk: list[_Part] = []  # oldest first
        self.flushes = 0
        self.meta_size = 0
        self.dropped: dict[str, Any] = {"parts": {}, "rows": {}, "bytes": {},
                                        "until_monotonic_ns": None}
        self.meta["max_size_bytes"] = max_size
        self.meta["dropped"] = self.dropped
        try:
            self.check_new(self.directory)  # a tracer that held the lock may have finished
            self.write_meta()
        except CaptureWriteError:
            self._unlock()
            if not existed:
                self._remove_empty_directories()
            raise
        except FusewbError:
            self._unlock()
            raise

    def _make_directories(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            for table in TABLES:
                (self.directory / table).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise FusewbError(f"cannot create capture directory {self.directory}: {exc.strerror}",
                              "choose a writable -o directory") from None

    def _remove_empty_directories(self) -> None:
        for folder in [*(self.directory / table for table in TABLES), self.directory]:
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty (not ours to remove) or already gone

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows[table].append(row)

    def _write_atomically(self, relative: str, write: Callable[[BinaryIO], None]) -> None:
        """``write`` into a temporary file, then rename it to ``relative``; on an OSError the
        temporary file is removed, the first failure kept, and CaptureWriteError raised."""
        final = self.directory / relative
        tmp = final.with_name(f".{final.name}.tmp")
        try:
            with os.fdopen(_open_private(tmp), "wb") as fh:
                write(fh)
            os.replace(tmp, final)
        except OSError as exc:
            _unlink_quietly(tmp)
            if self.failure is None:
                self.failure = WriteFailure(exc.errno, exc.strerror or str(exc), relative)
            raise CaptureWriteError(self._problem(), self._fix()) from None

    def _write_part(self, table: str) -> None:
        rows = self.rows[table]
        arrow = table_from_rows(rows, TABLES[table])
        number = self.parts[table] + 1
        relative = part_name(table, number)
        self._write_atomically(relative, lambda fh: pq.write_table(arrow, fh))
        path = self.directory / relative
        self.on_disk.append(_Part(table, path, len(rows), path.stat().st_size, _last_ns(rows),
                                  self.flushes))
        self.parts[table] = number
        self.written[table] += len(rows)
        self.rows[table] = []

    def kept_rows(self) -> dict[str, int]:
        """Rows per table still on disk: written minus dropped."""
        return {t: n - self.dropped["rows"].get(t, 0) for t, n in self.written.items()}

    def size_on_disk(self) -> int:
        """Bytes of the parts on disk and of the last ``meta.json``."""
        return sum(part.size for part in self.on_disk) + self.meta_size

    def write_meta(self) -> None:
        self.meta["tables"] = self.kept_rows()
        data = (json.dumps(self.meta, indent=2, default=str) + "\n").encode()
        self._write_atomically(META_FILE, lambda fh: fh.write(data))
        self.meta_size = len(data)

    def _drop(self, part: _Part) -> bool:
        """Delete ``part`` and count it in ``dropped``; False when it could not be deleted."""
        try:
            part.path.unlink()
        except FileNotFoundError:
            pass  # removed by someone else: gone all the same
        except OSError:
            return False
        self.on_disk.remove(part)
        for key, amount in (("parts", 1), ("rows", part.rows), ("bytes", part.size)):
            self.dropped[key][part.table] = self.dropped[key].get(part.table, 0) + amount
        if part.last_ns is not None:
            self.dropped["until_monotonic_ns"] = max(self.dropped["until_monotonic_ns"] or 0,
                                                     part.last_ns)
        return True

    def _keep_within_max_size(self) -> None:
        """Drop the oldest droppable parts (see the module docstring) while over ``max_size``."""
        if self.max_size is None:
            return
        for part in [p for p in self.on_disk
                     if p.table not in _UNDROPPABLE and p.flush < self.flushes]:
            if self.size_on_disk() <= self.max_size or not self._drop(part):
                return

    def flush(self, **meta: Any) -> None:
        """Write a part for every table holding rows, drop the oldest parts beyond
        ``max_size``, then write ``meta.json`` with ``meta`` merged."""
        self.flushes += 1
        for table, rows in self.rows.items():
            if rows:
                self._write_part(table)
        self._keep_within_max_size()
        self.meta.update(meta)
        self.write_meta()

    @property
    def reserve(self) -> int:
        """Bytes to keep free on the capture's file system (see RESERVE_SHARE)."""
        try:
            info = os.statvfs(self.directory)
        except OSError:
            return RESERVE_MIN
        share = int(info.f_blocks * info.f_frsize * RESERVE_SHARE)
        biggest = max((part.size for part in self.on_disk), default=0)
        return min(max(share, RESERVE_MIN), RESERVE_MAX) + 4 * biggest

    def space_left(self) -> int | None:
        """Bytes an unprivileged writer may still write on the capture's file system (None
        when statvfs fails)."""
        try:
            info = os.statvfs(self.directory)
        except OSError:
            return None
        return info.f_bavail * info.f_frsize

    def low_on_space(self) -> bool:
        """Whether the capture's file system has less than :attr:`reserve` bytes left."""
        left = self.space_left()
        return left is not None and left < self.reserve

    def close(self, **meta: Any) -> None:
        """The final flush: ``complete: true``. Once a write has failed, only ``meta.json`` with
        ``meta`` and ``complete: false`` (if the file system still takes it). Never raises."""
        if self.failure is None:
            try:
                self.flush(**meta, complete=True)
                self.final_meta_written = True
            except CaptureWriteError:
                pass  # failed now: left as complete=false below
        if self.failure is not None:
            self.meta.update(meta, complete=False)
            try:
                self.write_meta()
                self.final_meta_written = True
            except CaptureWriteError:
                pass  # failure_error() says that the last meta.json written stays
        self._unlock()

    def _problem(self) -> str:
        failure = self.failure
        assert failure is not None
        if failure.errno in _NO_SPACE:
            return f"no space left for capture {self.directory} (writing {failure.relative})"
        if failure.errno == errno.ENOENT and not self.directory.is_dir():
            return f"capture directory {self.directory} was removed while tracing"
        return f"cannot write {failure.relative} of capture {self.directory} ({failure.strerror})"

    def _fix(self) -> str:
        failure = self.failure
        assert failure is not None
        if failure.errno in _NO_SPACE:
            return "free space there or trace into another -o directory"
        if failure.errno == errno.ENOENT:
            return "keep the -o directory until fusewb trace has exited"
        return "check that file system or trace into another -o directory"

    def _kept(self) -> str:
        if not self.directory.is_dir():
            return "nothing of it is left"
        count = sum(self.parts.values())
        parts = f"{count} part{'' if count == 1 else 's'}"
        if self.final_meta_written:
            return f"kept {parts} and meta.json with complete=false"
        return (f"kept {parts} and the meta.json of the last flush (complete=false), which could "
                "not be updated")

    def failure_error(self) -> CaptureWriteError:
        """The one-line error of a failed writer (after :meth:`close`): what failed, what was
        kept, and the fix."""
        return CaptureWriteError(f"{self._problem()}: tracing stopped, {self._kept()}", self._fix())
