"""Reading captures: validation, lazily loaded tables, and the host column.

``load_capture(path)`` accepts one capture directory (``meta.json`` + ``<table>/part-*.parquet``,
see :mod:`fusewb.schema`) or a folder whose sub-directories are captures (one per host); either way
every table gets a ``host`` column and repeated strings become categoricals. A table whose
directory is absent because nothing of that kind happened reads as an empty DataFrame with the
schema's columns. Anything unreadable raises :class:`CaptureError` (one line, exit 2). A capture
is never modified.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fusewb.errors import FusewbError
from fusewb.schema import SCHEMA_VERSION, TABLES

__all__ = [
    "Capture",
    "CaptureSource",
    "CaptureError",
    "MissingEventsError",
    "load_capture",
    "CATEGORICAL_COLUMNS",
    "TABLE_PROBES",
]

# Columns holding repeated strings, stored as pandas categoricals.
CATEGORICAL_COLUMNS = frozenset(
    {"host", "comm", "bdi", "kind", "opcode_name", "path", "source", "end_comm", "mount"}
)

# What a probe name must contain for its events to land in a table (or a vm kind, "vm:<kind>").
TABLE_PROBES: dict[str, tuple[str, ...]] = {
    "waits": ("folio_wait_writeback", "wait_on_page_writeback"),
    "stacks": ("folio_wait_writeback", "wait_on_page_writeback"),
    "requests": ("fuse_request_send", "fuse_request_end", "fuse_simple_request", "fuse_send"),
    "throttle": ("balance_dirty_pages",),
    "vm": ("vmscan", "migrate", "compaction", "shrink_folio_list", "compact_zone"),
    "vm:direct_reclaim": ("mm_vmscan_direct_reclaim",),
    "vm:memcg_reclaim": ("mm_vmscan_memcg_reclaim",),
    "vm:shrink_inactive": ("mm_vmscan_lru_shrink_inactive",),
    "vm:vmscan_throttled": ("mm_vmscan_throttled",),
    "vm:migrate_pages": ("mm_migrate_pages", "migrate_pages"),
    "vm:compaction": ("mm_compaction_begin", "mm_compaction_end", "compact_zone"),
}


# meta.json keys the analysis reads, and the JSON types they must have when present.
_META_TYPES: dict[str, tuple[type, ...]] = {
    "host": (str,), "kernel_release": (str,), "plan": (str,), "probes": (list,),
    "mounts": (list,), "start_monotonic_ns": (int,), "end_monotonic_ns": (int,),
    "complete": (bool,), "lost_events": (dict,), "server_threads": (list,), "tables": (dict,),
}


class CaptureError(FusewbError):
    """A capture that cannot be read: missing, empty, truncated, corrupt or from a newer fusewb."""


class MissingEventsError(FusewbError):
    """A question needs events that the capture's probe plan did not record."""


@dataclass(frozen=True)
class CaptureSource:
    """One capture directory of one host, with its parsed ``meta.json``."""

    host: str
    path: Path
    meta: dict[str, Any]

    @property
    def probes(self) -> list[str]:
        return [str(p) for p in self.meta.get("probes") or []]

    def table_files(self, table: str) -> list[Path]:
        """The completed Parquet parts of ``table`` (temporary files of a writer are ignored)."""
        folder = self.path / table
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("part-*.parquet") if p.is_file())

    def recorded(self, need: str) -> bool:
        """Whether this capture could hold events for ``need`` (a table or ``vm:<kind>``)."""
        table = need.split(":", 1)[0]
        if self.table_files(table):
            if ":" not in need:
                return True
        markers = TABLE_PROBES.get(need, (table,))
        return any(marker in probe for probe in self.probes for marker in markers)

    @property
    def start_ns(self) -> int:
        return int(self.meta.get("start_monotonic_ns") or 0)

    @property
    def end_ns(self) -> int | None:
        end = self.meta.get("end_monotonic_ns")
        return int(end) if end is not None else None

    @property
    def lost_total(self) -> int:
        lost = self.meta.get("lost_events") or {}
        return int(lost.get("total") or 0) if isinstance(lost, dict) else 0


@dataclass
class Capture:
    """One capture or several (one per host): meta per host and tables loaded on first use."""

    path: Path
    sources: list[CaptureSource]
    progress: Callable[[str], None] | None = None
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def meta(self) -> dict[str, Any]:
        """The ``meta.json`` of the first (or only) capture."""
        return self.sources[0].meta

    @property
    def hosts(self) -> list[str]:
        return [s.host for s in self.sources]

    def source(self, host: str) -> CaptureSource:
        for src in self.sources:
            if src.host == host:
                return src
        raise KeyError(host)

    def recorded(self, need: str) -> bool:
        """True when at least one capture's plan recorded the events ``need`` names."""
        return any(src.recorded(need) for src in self.sources)

    def require(self, needs: Iterable[str], question: str) -> None:
        """Raise :class:`MissingEventsError` naming the first need no capture recorded."""
        for need in needs:
            if not self.recorded(need):
                markers = ", ".join(TABLE_PROBES.get(need, (need,)))
                raise MissingEventsError(
                    f"{question} needs {need} events but {self.path} has none and its probes "
                    f"include none of: {markers}",
                    "trace again with a plan that attaches them (see `fusewb doctor`)",
                )

    def table(self, name: str) -> pd.DataFrame:
        """The whole table ``name`` over all hosts (cached; do not modify the returned frame)."""
        if name not in TABLES:
            raise KeyError(name)
        if name not in self._tables:
            frames = [_read_table(src, name, self.hosts, self.progress) for src in self.sources]
            frames = [f for f in frames if len(f)] or frames[:1]
            self._tables[name] = frames[0] if len(frames) == 1 else _concat(frames)
        return self._tables[name]

    def derived(self, key: str, build: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """``build()`` once per capture under ``key`` (e.g. waits with their attributed path)."""
        cache_key = f"derived:{key}"
        if cache_key not in self._tables:
            self._tables[cache_key] = build()
        return self._tables[cache_key]

    def mounts(self) -> pd.DataFrame:
        """Every FUSE mount of every host: host, mountpoint, fstype, bdi, connection, max_ratio."""
        rows = [
            {
                "host": src.host,
                "mountpoint": m.get("mountpoint"),
                "fstype": m.get("fstype"),
                "bdi": m.get("bdi"),
                "connection": m.get("connection"),
                "max_ratio": m.get("max_ratio"),
                "strict_limit": m.get("strict_limit"),
            }
            for src in self.sources
            for m in (src.meta.get("mounts") or [])
            if isinstance(m, dict)
        ]
        columns = ["host", "mountpoint", "fstype", "bdi", "connection", "max_ratio", "strict_limit"]
        return pd.DataFrame(rows, columns=columns)

    def mount_of(self) -> dict[tuple[str, str], str]:
        """``(host, bdi) -> mountpoint`` from the captures' meta."""
        out: dict[tuple[str, str], str] = {}
        for row in self.mounts().itertuples(index=False):
            if row.bdi is not None and (row.host, row.bdi) not in out:
                out[(row.host, str(row.bdi))] = str(row.mountpoint)
        return out

    def start_ns(self) -> pd.Series:
        """``host -> start_monotonic_ns``."""
        return pd.Series({s.host: s.start_ns for s in self.sources}, dtype="int64")

    def end_ns(self) -> dict[str, int | None]:
        return {s.host: s.end_ns for s in self.sources}


def _fail(problem: str, fix: str) -> CaptureError:
    return CaptureError(problem, fix)


def _read_meta(folder: Path) -> dict[str, Any]:
    meta_path = folder / "meta.json"
    try:
        text = meta_path.read_text()
    except FileNotFoundError:
        raise _fail(
            f"{folder} is not a fusewb capture (no meta.json)",
            "pass the directory given to `fusewb trace -o`",
        ) from None
    except OSError as exc:
        raise _fail(f"cannot read {meta_path}: {exc.strerror}", "check its permissions") from None
    if not text.strip():
        raise _fail(f"{meta_path} is empty (capture truncated)", "trace again") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(
            f"{meta_path} is corrupt (invalid JSON at line {exc.lineno})", "trace again"
        ) from None
    if not isinstance(meta, dict):
        raise _fail(f"{meta_path} is corrupt (not a JSON object)", "trace again")
    version = meta.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail(f"{meta_path} has no valid schema_version", "trace again with fusewb")
    if version > SCHEMA_VERSION:
        raise _fail(
            f"{folder} was written by a newer fusewb (capture schema {version}, this fusewb "
            f"reads up to {SCHEMA_VERSION})",
            "upgrade fusewb to analyse it",
        )
    if version < 1:
        raise _fail(f"{meta_path} has an invalid schema_version {version}", "trace again")
    for key, types in _META_TYPES.items():
        value = meta.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)
                                  and bool not in types):
            raise _fail(f"{meta_path} is corrupt ({key} is a {type(value).__name__})",
                        "trace again")
    return meta


def _source(folder: Path, fallback_host: str) -> CaptureSource:
    meta = _read_meta(folder)
    host = str(meta.get("host") or fallback_host)
    return CaptureSource(host=host, path=folder, meta=meta)


def load_capture(
    path: str | Path, progress: Callable[[str], None] | None = None
) -> Capture:
    """Open a capture (or a folder of captures, one per host) for analysis.

    Only ``meta.json`` is read here; tables load on first use through :meth:`Capture.table`.
    ``progress`` (optional) receives one line per table part read. Raises :class:`CaptureError`
    for a missing, empty, corrupt or newer-version capture.
    """
    folder = Path(path)
    if not folder.exists():
        raise _fail(f"capture {folder} does not exist", "pass the directory of `fusewb trace -o`")
    if not folder.is_dir():
        raise _fail(f"capture {folder} is not a directory", "pass the directory, not a file")
    if (folder / "meta.json").exists():
        sources = [_source(folder, folder.name)]
    else:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "meta.json").exists())
        if not children:
            what = "is empty" if not any(folder.iterdir()) else "holds no meta.json"
            raise _fail(
                f"capture {folder} {what}: not a fusewb capture nor a folder of captures",
                "pass the directory given to `fusewb trace -o`",
            )
        sources = [_source(child, child.name) for child in children]
        sources = _unique_hosts(sources)
    return Capture(path=folder, sources=sources, progress=progress)


def _unique_hosts(sources: list[CaptureSource]) -> list[CaptureSource]:
    """Captures of one host under several sub-folders get ``host/sub-folder`` as host."""
    counts: dict[str, int] = {}
    for src in sources:
        counts[src.host] = counts.get(src.host, 0) + 1
    return [
        CaptureSource(f"{s.host}/{s.path.name}", s.path, s.meta) if counts[s.host] > 1 else s
        for s in sources
    ]


def _read_table(
    src: CaptureSource, name: str, hosts: list[str], progress: Callable[[str], None] | None
) -> pd.DataFrame:
    schema = _read_schema(TABLES[name])
    parts = []
    files = src.table_files(name)
    for number, part in enumerate(files, 1):
        if progress is not None:
            progress(f"reading {src.host} {name} part {number}/{len(files)}")
        parts.append(_read_part(part, schema))
    if parts:
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    else:
        table = schema.empty_table()
    frame = table.to_pandas()
    host = pd.Categorical.from_codes(
        np.full(len(frame), hosts.index(src.host), dtype=np.int8 if len(hosts) < 128 else np.int32),
        categories=hosts,
    )
    frame.insert(0, "host", host)
    return frame


def _read_schema(schema: pa.Schema) -> pa.Schema:
    """The table schema with repeated-string columns read as dictionaries (-> categoricals)."""
    dictionary = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([
        pa.field(f.name, dictionary) if f.name in CATEGORICAL_COLUMNS and f.type == pa.string()
        else f
        for f in schema
    ])


def _read_part(part: Path, schema: pa.Schema) -> pa.Table:
    try:
        if part.stat().st_size == 0:
            raise _fail(f"{part} is empty (capture truncated)", "trace again")
        names = set(pq.read_schema(part).names)
        missing = [f.name for f in schema if f.name not in names]
        if missing:
            raise _fail(
                f"{part} lacks columns {', '.join(missing)} of the capture schema", "trace again"
            )
        dictionary = [f.name for f in schema if pa.types.is_dictionary(f.type)]
        table = pq.read_table(part, columns=schema.names, read_dictionary=dictionary)
    except CaptureError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "magic bytes" in reason:
            reason = "not a complete Parquet file"
        raise _fail(
            f"{part} is truncated or corrupt ({reason.replace(str(part), 'part')[:120]})",
            "trace again, or move that part aside to analyse the rest",
        ) from None
    try:
        return table.cast(schema)
    except (pa.ArrowException, ValueError) as exc:
        raise _fail(f"{part} has columns of the wrong type ({exc})", "trace again") from None


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-host frames keeping categoricals (categories united first)."""
    frames = [f.copy() for f in frames]
    for column in frames[0].columns:
        if all(isinstance(f[column].dtype, pd.CategoricalDtype) for f in frames):
            union = pd.Index([])
            for f in frames:
                union = union.union(f[column].cat.categories, sort=False)
            for f in frames:
                f[column] = f[column].cat.set_categories(union)
    return pd.concat(frames, ignore_index=True)
