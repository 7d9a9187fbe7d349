"""Writing a capture directory (format: :mod:`fusewb.schema`).

Rows are buffered per table and written as numbered Parquet parts (temporary name, then
``os.replace``), so a reader, or a ``kill -9`` of the tracer, only ever sees complete parts.
``meta.json`` is rewritten the same way at each flush (``complete: false``) and at the end.
Everything is created owner-only: the directory 0700, files 0600 (task names, paths).

One writer per directory: it holds ``flock`` on the directory while open, so a second tracer
given the same ``-o`` is refused instead of overwriting the first one's parts.

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

import pyarrow as pa
import pyarrow.parquet as pq

from fusewb.errors import FusewbError
from fusewb.schema import SCHEMA_VERSION, TABLES

__all__ = ["CaptureWriter", "CaptureWriteError", "WriteFailure", "META_FILE"]

META_FILE = "meta.json"

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


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

    def __init__(self, directory: Path, meta: dict[str, Any]) -> None:
        self.directory = Path(directory)
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

    def pending_rows(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

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
        arrow = pa.Table.from_pylist(rows, schema=TABLES[table])
        number = self.parts[table] + 1
        self._write_atomically(f"{table}/part-{number:06d}.parquet",
                               lambda fh: pq.write_table(arrow, fh))
        self.parts[table] = number
        self.written[table] += len(rows)
        self.rows[table] = []

    def write_meta(self) -> None:
        self.meta["tables"] = dict(self.written)
        text = json.dumps(self.meta, indent=2, default=str) + "\n"
        self._write_atomically(META_FILE, lambda fh: fh.write(text.encode()))

    def flush(self, **meta: Any) -> None:
        """Write a part for every table holding rows, then ``meta.json`` with ``meta`` merged."""
        for table, rows in self.rows.items():
            if rows:
                self._write_part(table)
        self.meta.update(meta)
        self.write_meta()

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
