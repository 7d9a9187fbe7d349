"""Writing a capture directory (format: :mod:`fusewb.schema`).

Rows are buffered per table and written as numbered Parquet parts (temporary name, then
``os.replace``), so a reader, or a ``kill -9`` of the tracer, only ever sees complete parts.
``meta.json`` is rewritten atomically at each flush (``complete: false``) and at the end.
Everything is created owner-only: the directory 0700, files 0600 (task names, paths).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fusewb.errors import FusewbError
from fusewb.schema import SCHEMA_VERSION, TABLES

__all__ = ["CaptureWriter", "META_FILE"]

META_FILE = "meta.json"


def _open_private(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


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
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            for table in TABLES:
                (self.directory / table).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise FusewbError(f"cannot create capture directory {self.directory}: {exc.strerror}",
                              "choose a writable -o directory") from None
        self.meta: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **meta, "complete": False}
        self.rows: dict[str, list[dict[str, Any]]] = {table: [] for table in TABLES}
        self.parts: dict[str, int] = {table: 0 for table in TABLES}
        self.written: dict[str, int] = {table: 0 for table in TABLES}
        self.write_meta()

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows[table].append(row)

    def pending_rows(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    def _write_part(self, table: str) -> None:
        rows = self.rows[table]
        arrow = pa.Table.from_pylist(rows, schema=TABLES[table])
        self.parts[table] += 1
        final = self.directory / table / f"part-{self.parts[table]:06d}.parquet"
        tmp = final.with_name(f".{final.name}.tmp")
        with os.fdopen(_open_private(tmp), "wb") as fh:
            pq.write_table(arrow, fh)
        os.replace(tmp, final)
        self.written[table] += len(rows)
        self.rows[table] = []

    def write_meta(self) -> None:
        self.meta["tables"] = dict(self.written)
        final = self.directory / META_FILE
        tmp = self.directory / f".{META_FILE}.tmp"
        with os.fdopen(_open_private(tmp), "w") as fh:
            json.dump(self.meta, fh, indent=2, default=str)
            fh.write("\n")
        os.replace(tmp, final)

    def flush(self, **meta: Any) -> None:
        """Write a part for every table holding rows, then ``meta.json`` with ``meta`` merged."""
        for table, rows in self.rows.items():
            if rows:
                self._write_part(table)
        self.meta.update(meta)
        self.write_meta()

    def close(self, **meta: Any) -> None:
        """The final flush: ``complete: true``."""
        self.flush(**meta, complete=True)
