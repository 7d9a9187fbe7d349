"""Reading captures: validation, lazily loaded tables, and the host column.

``load_capture(path)`` accepts one capture directory (``meta.json`` + ``<table>/part-*.parquet``,
see :mod:`fusewb.contract.schema`) or a folder whose sub-directories are captures (one per host); either way
every table gets a ``host`` column and repeated strings become categoricals. A table whose
directory is absent because nothing of that kind happened reads as an empty DataFrame with the
schema's columns. A capture is never modified.

Reads are bounded: ``meta.json`` must be a regular file of at most :data:`MAX_META_BYTES` and a
Parquet part one of at most :data:`MAX_PART_BYTES` (checked with ``stat`` before opening, so a
FIFO or a link to a device is refused, never read). A ``meta.json`` that is not UTF-8 JSON with
the types of :data:`META_SPEC` raises :class:`CaptureError` (one line, exit 2). A Parquet part
that is unreadable, or lacks a column of the schema, or stores one as another kind of type (text
for numbers, ...), is skipped: the rest is analysed and :meth:`Capture.damage` names the part for
the INCOMPLETE_CAPTURE flag. A table of which no part is readable (or whose folder is not a
folder) raises :class:`CaptureError`. Columns the schema does not know are ignored.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fusewb.contract.errors import FusewbError
from fusewb.contract.events import EVENT_KINDS, STACKS_FROM, VM_EVENT_KINDS, event_kind
from fusewb.contract.meta import META_SPEC, Spec
from fusewb.contract.units import format_size
from fusewb.contract.schema import PART_GLOB, SCHEMA_VERSION, TABLE_SPECS, TABLES

__all__ = [
    "Capture",
    "CaptureSource",
    "check_table",
    "read_part",
    "frame_with_host",
    "unreadable_table",
    "CaptureError",
    "MissingEventsError",
    "load_capture",
    "CATEGORICAL_COLUMNS",
    "TABLE_PROBES",
    "REQUIRED_COLUMNS",
    "META_SPEC",
    "MAX_META_BYTES",
    "MAX_PART_BYTES",
    "MAX_DECODED_BYTES",
    "BATCH_ROWS",
]

# Columns holding repeated strings, stored as pandas categoricals.
CATEGORICAL_COLUMNS = frozenset(
    {"host", "comm", "bdi", "kind", "opcode_name", "path", "source", "end_comm", "mount"}
)

# What a probe name must contain for its events to land in a table (or a vm kind, "vm:<kind>"),
# from the event registry (contract/events.py).
TABLE_PROBES: dict[str, tuple[str, ...]] = {
    **{kind.table: kind.probes for kind in EVENT_KINDS},
    "stacks": event_kind(STACKS_FROM).probes,
    **{f"vm:{kind.name}": kind.probes for kind in VM_EVENT_KINDS},
}

# Columns every row has (the tracer never leaves them null): a part with nulls there is corrupt.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    table: spec.required for table, spec in TABLE_SPECS.items()}

MAX_META_BYTES = 4 << 20  # a meta.json holds a few KiB; anything bigger is not one
MAX_PART_BYTES = 1 << 30  # a Parquet part holds about a second of events
MAX_DECODED_BYTES = 4 * MAX_PART_BYTES  # what a part's footer may say its data decodes to
BATCH_ROWS = 1 << 18  # rows of a part decoded at once by read_part

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
        """The completed Parquet parts of ``table`` (temporary files of a writer are ignored);
        entries that are not regular files are listed too, for the reader to refuse."""
        folder = self.path / table
        if not folder.is_dir():
            return []
        try:
            return sorted(folder.glob(PART_GLOB))
        except OSError:
            return []

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
    _damage: dict[str, list[str]] = field(default_factory=dict, repr=False)

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
            frames = []
            for src in self.sources:
                frame, skipped = _read_table(src, name, self.hosts, self.progress)
                frames.append(frame)
                self._damage.setdefault(src.host, []).extend(skipped)
            frames = [f for f in frames if len(f)] or frames[:1]
            self._tables[name] = frames[0] if len(frames) == 1 else _concat(frames)
        return self._tables[name]

    def damage(self, host: str) -> list[str]:
        """What was skipped of ``host``'s capture as unreadable (one line per Parquet part),
        after reading every table."""
        for name in TABLES:
            self.table(name)
        return list(self._damage.get(host, []))

    def damage_read(self, host: str) -> list[str]:
        """What was skipped of ``host``'s capture in the tables read so far (see damage)."""
        return list(self._damage.get(host, []))

    def derived(self, key: str, build: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """``build()`` once per capture under ``key`` (e.g. waits with their attributed path)."""
        cache_key = f"derived:{key}"
        if cache_key not in self._tables:
            self._tables[cache_key] = build()
        return self._tables[cache_key]

    def detached(self, keys: Iterable[str] = ()) -> Capture:
        """A copy without the progress callback holding only the cached frames ``keys`` (e.g.
        ``derived:stack_paths``): small, to send to the workers of a Dask cluster."""
        return Capture(self.path, self.sources, None,
                       {k: v for k, v in self._tables.items() if k in set(keys)})

    def mounts(self) -> pd.DataFrame:
        """Every FUSE mount of every host: host, mountpoint, fstype, bdi, connection, max_ratio,
        strict_limit, as meta.json has them (object columns: None where a mount lacks a key)."""
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
        return pd.DataFrame(rows, columns=columns, dtype=object)

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


_TRACE_AGAIN = "trace again"
_SKIP_PART = "trace again, or move that part aside to analyse the rest"
_FILE_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}
_JSON_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "an object"}
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _fail(problem: str, fix: str) -> CaptureError:
    """A CaptureError kept on one line whatever ``problem`` quotes (paths, library messages)."""
    return CaptureError(_LINE_BREAKS.sub(" ", problem), fix)


def _file_kind(info: os.stat_result) -> str:
    return _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "a special file")


def _file_problem(info: os.stat_result, limit: int) -> str | None:
    """Why a file with ``info`` is not to be read: not a regular file, or over ``limit`` bytes."""
    if not stat.S_ISREG(info.st_mode):
        return f"is not a regular file but {_file_kind(info)}"
    if info.st_size > limit:
        return f"is {format_size(info.st_size)}, over the {format_size(limit)} fusewb reads"
    return None


def _check_meta_file(meta_path: Path, info: os.stat_result) -> None:
    problem = _file_problem(info, MAX_META_BYTES)
    if problem is not None:
        raise _fail(f"{meta_path} {problem}", _TRACE_AGAIN)


def _read_meta_bytes(meta_path: Path) -> bytes:
    """At most MAX_META_BYTES of ``meta_path``, a regular file (checked before opening it)."""
    try:
        _check_meta_file(meta_path, os.stat(meta_path))
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        with open(os.open(meta_path, flags), "rb") as fh:
            _check_meta_file(meta_path, os.fstat(fh.fileno()))  # replaced since the stat
            return fh.read(MAX_META_BYTES)
    except FileNotFoundError:
        raise _fail(
            f"{meta_path.parent} is not a fusewb capture (no meta.json)",
            "pass the directory given to `fusewb trace -o`",
        ) from None
    except OSError as exc:
        raise _fail(f"cannot read {meta_path}: {exc.strerror}", "check its permissions") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_meta(meta_path: Path, data: bytes) -> Any:
    """The JSON value in ``data``; CaptureError when it is not UTF-8 JSON."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"{meta_path} is corrupt (not UTF-8 text at byte {exc.start})",
                    _TRACE_AGAIN) from None
    if not text.strip():
        raise _fail(f"{meta_path} is empty (capture truncated)", _TRACE_AGAIN)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _fail(f"{meta_path} is corrupt (invalid JSON at line {exc.lineno})",
                    _TRACE_AGAIN) from None
    except ValueError:  # NaN or Infinity, an integer of thousands of digits
        raise _fail(f"{meta_path} is corrupt (invalid JSON number)", _TRACE_AGAIN) from None
    except RecursionError:
        raise _fail(f"{meta_path} is corrupt (JSON nested too deeply)", _TRACE_AGAIN) from None


def _json_kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), "a value")


def _scalar_mismatch(value: Any, wanted: type, where: str) -> str | None:
    if type(value) is not wanted:  # bool is not an int here
        return f"{where} is {_json_kind(value)}, not {_JSON_KINDS[wanted]}"
    if wanted is int and not -(1 << 63) <= value < 1 << 63:
        return f"{where} is out of the 64-bit range"
    return None


def _mismatch(value: Any, spec: Spec, where: str, named: bool = True) -> str | None:
    """The first place in ``value`` that is not of ``spec`` (see META_SPEC), else None. Null is
    an absent ``named`` key; as an item of a list or of a ``"*"`` object it is a mismatch."""
    if value is None:
        return None if named else f"{where} is null"
    if isinstance(spec, type):
        return _scalar_mismatch(value, spec, where)
    wanted, kind = (list, "an array") if isinstance(spec, list) else (dict, "an object")
    if not isinstance(value, wanted):
        return f"{where} is {_json_kind(value)}, not {kind}"
    if isinstance(value, list):
        items = ((f"{where}[{i}]", item, spec[0], False) for i, item in enumerate(value))
    else:
        items = ((f"{where}.{key}" if where else key, item, spec.get(key, spec.get("*")),
                  key in spec) for key, item in value.items())
    for place, item, inner, is_named in items:
        found = None if inner is None else _mismatch(item, inner, place, is_named)
        if found is not None:
            return found
    return None


def _read_meta(folder: Path) -> dict[str, Any]:
    meta_path = folder / "meta.json"
    meta = _parse_meta(meta_path, _read_meta_bytes(meta_path))
    if not isinstance(meta, dict):
        raise _fail(f"{meta_path} is corrupt (not a JSON object)", _TRACE_AGAIN)
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
        raise _fail(f"{meta_path} has an invalid schema_version {version}", _TRACE_AGAIN)
    problem = _mismatch(meta, META_SPEC, "")
    if problem is not None:
        raise _fail(f"{meta_path} is corrupt ({problem})", _TRACE_AGAIN)
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
        sources = _unique_hosts([_source(child, child.name) for child in _host_folders(folder)])
    return Capture(path=folder, sources=sources, progress=progress)


def _host_folders(folder: Path) -> list[Path]:
    """The captures in a folder of captures (one per host); CaptureError when there is none."""
    try:
        entries = sorted(folder.iterdir())
        children = [p for p in entries if p.is_dir() and (p / "meta.json").exists()]
    except OSError as exc:
        raise _fail(f"cannot read capture {folder}: {exc.strerror}",
                    "check its permissions") from None
    if not children:
        what = "is empty" if not entries else "holds no meta.json"
        raise _fail(
            f"capture {folder} {what}: not a fusewb capture nor a folder of captures",
            "pass the directory given to `fusewb trace -o`",
        )
    return children


def _unique_hosts(sources: list[CaptureSource]) -> list[CaptureSource]:
    """Captures of one host under several sub-folders get ``host/sub-folder`` as host."""
    counts: dict[str, int] = {}
    for src in sources:
        counts[src.host] = counts.get(src.host, 0) + 1
    return [
        CaptureSource(f"{s.host}/{s.path.name}", s.path, s.meta) if counts[s.host] > 1 else s
        for s in sources
    ]


class _BadPart(Exception):
    """A Parquet part that cannot be used, and why (``reason`` follows the part's name)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_table_folder(folder: Path) -> None:
    """CaptureError when ``folder`` (a table) exists but is not a directory one can read."""
    if not os.path.lexists(folder):
        return  # nothing of that kind happened
    fix = "trace again, or move it aside to analyse the rest"
    try:
        info = os.stat(folder)
    except OSError as exc:
        raise _fail(f"cannot read {folder}: {exc.strerror}", fix) from None
    if not stat.S_ISDIR(info.st_mode):
        raise _fail(f"{folder} is not a directory but {_file_kind(info)}", fix)


def _read_table(
    src: CaptureSource, name: str, hosts: list[str], progress: Callable[[str], None] | None
) -> tuple[pd.DataFrame, list[str]]:
    """Table ``name`` of one capture with its host column, and a line per part skipped as
    unusable; CaptureError when the table has parts and none of them is usable."""
    _check_table_folder(src.path / name)
    schema = _read_schema(TABLES[name])
    parts, bad = [], []
    files = src.table_files(name)
    for number, part in enumerate(files, 1):
        if progress is not None:
            progress(f"reading {src.host} {name} part {number}/{len(files)}")
        try:
            parts.extend(_read_part(part, schema, REQUIRED_COLUMNS[name]))
        except _BadPart as exc:
            bad.append((part, exc.reason))
    if bad and not parts:
        raise _fail(f"{bad[0][0]} {bad[0][1]}", _SKIP_PART)
    if parts:
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    else:
        table = schema.empty_table()
    return frame_with_host(table, src.host, hosts), [_damage_line(name, part, reason)
                                                 for part, reason in bad]


def _damage_line(name: str, part: Path, reason: str) -> str:
    return _LINE_BREAKS.sub(" ", f"{name}/{part.name} {reason}")


def frame_with_host(table: pa.Table, host: str, hosts: list[str]) -> pd.DataFrame:
    """``table`` as a frame whose first column, ``host``, is categorical over ``hosts``."""
    frame = table.to_pandas()
    codes = np.full(len(frame), hosts.index(host), dtype=np.int8 if len(hosts) < 128 else np.int32)
    frame.insert(0, "host", pd.Categorical.from_codes(codes, categories=hosts))
    return frame


def check_table(src: CaptureSource, name: str) -> list[Path]:
    """The parts of ``src``'s table ``name`` (CaptureError when its folder is not a folder)."""
    _check_table_folder(src.path / name)
    return src.table_files(name)


def read_part(
    name: str, part: Path, columns: Iterable[str], use: Callable[[pa.Table], None],
    batch_rows: int | None = None,
) -> str | None:
    """Pass each batch of ``batch_rows`` rows (default :data:`BATCH_ROWS`) of a Parquet part of
    table ``name`` to ``use`` (Arrow tables of ``columns``, plus the columns every row has, to
    check them), checked as a whole table's read checks them; the damage line when a batch is
    unusable (the caller drops what it made of the part's earlier batches), else None."""
    wanted = set(columns) | set(REQUIRED_COLUMNS[name])
    full = _read_schema(TABLES[name])
    schema = pa.schema([f for f in full if f.name in wanted])
    try:
        for table in _read_part(part, schema, REQUIRED_COLUMNS[name], full,
                                batch_rows or BATCH_ROWS):
            use(table)
    except _BadPart as exc:
        return _damage_line(name, part, exc.reason)
    return None


def unreadable_table(first_bad: Path, reason: str) -> CaptureError:
    """The error for a table of which no part is readable (``reason``: the first part's)."""
    return _fail(f"{first_bad} {reason}", _SKIP_PART)


def _read_schema(schema: pa.Schema) -> pa.Schema:
    """The table schema with repeated-string columns read as dictionaries (-> categoricals)."""
    dictionary = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([
        pa.field(f.name, dictionary) if f.name in CATEGORICAL_COLUMNS and f.type == pa.string()
        else f
        for f in schema
    ])


def _kind(arrow_type: pa.DataType) -> str:
    """What a column holds, whatever its encoding or width: integer, string, list of string..."""
    types = pa.types
    if types.is_dictionary(arrow_type):
        return _kind(arrow_type.value_type)
    if types.is_integer(arrow_type):
        return "integer"
    if types.is_string(arrow_type) or types.is_large_string(arrow_type) \
            or types.is_string_view(arrow_type):
        return "string"
    if types.is_list(arrow_type) or types.is_large_list(arrow_type) \
            or types.is_list_view(arrow_type) or types.is_large_list_view(arrow_type):
        return f"list of {_kind(arrow_type.value_type)}"
    return "boolean" if types.is_boolean(arrow_type) else str(arrow_type)


def _column_problem(stored: pa.Schema, schema: pa.Schema) -> str | None:
    """Why columns of a part's ``stored`` schema cannot be read as ``schema``'s, else None."""
    missing = [f.name for f in schema if f.name not in stored.names]
    if missing:
        return f"lacks columns {', '.join(missing)} of the capture schema"
    twice = [f.name for f in schema if stored.names.count(f.name) > 1]
    if twice:
        return f"holds columns {', '.join(twice)} twice"
    wrong = [f"{f.name} {_kind(stored.field(f.name).type)}" for f in schema
             if _kind(stored.field(f.name).type) != _kind(f.type)]
    if wrong:
        return f"has columns of the wrong type ({', '.join(wrong)[:120]})"
    return None


def _library_reason(exc: Exception, part: Path) -> str:
    reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "magic bytes" in reason:
        reason = "not a complete Parquet file"
    return reason.replace(str(part), "part")[:120]


def _stored_problem(part: Path, schema: pa.Schema) -> str | None:
    """What a part's footer says is wrong with it: columns, or more data than fusewb decodes."""
    with pq.ParquetFile(part) as parquet:
        metadata = parquet.metadata
        decoded = sum(metadata.row_group(i).total_byte_size
                      for i in range(metadata.num_row_groups))
        if decoded > MAX_DECODED_BYTES:
            return f"holds {format_size(decoded)} of data, over the {format_size(MAX_DECODED_BYTES)} " \
                "fusewb reads"
        return _column_problem(parquet.schema_arrow, schema)


def _read_part(part: Path, schema: pa.Schema, required: tuple[str, ...],
               check: pa.Schema | None = None, batch_rows: int | None = None
               ) -> Iterator[pa.Table]:
    """One Parquet part with ``schema``'s columns, cast to its types, values in the
    ``required`` columns of every row, as one table or tables of ``batch_rows`` rows; _BadPart
    (raised while iterating) when unusable. The footer is checked against ``check`` (default
    ``schema``): every column of the capture schema, even unread ones."""
    try:
        info = os.stat(part)
    except OSError as exc:
        raise _BadPart(f"cannot be read ({exc.strerror})") from None
    problem = _file_problem(info, MAX_PART_BYTES)
    if problem is None and info.st_size == 0:
        problem = "is empty (capture truncated)"
    dictionary = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    try:
        problem = problem or _stored_problem(part, check if check is not None else schema)
        if problem is not None:
            raise _BadPart(problem)
        if batch_rows is None:
            tables = iter([pq.read_table(part, columns=schema.names, read_dictionary=dictionary)])
        else:
            parquet = pq.ParquetFile(part, read_dictionary=dictionary)
            tables = (pa.Table.from_batches([batch]) for batch in parquet.iter_batches(
                batch_size=batch_rows, columns=schema.names))
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise _BadPart(f"is truncated or corrupt ({_library_reason(exc, part)})") from None
    while True:
        try:
            table = next(tables, None)
            if table is None:
                return
            table = table.cast(schema)  # safe: an integer that does not fit fails
            table.validate(full=True)  # UTF-8, offsets and dictionary indices
        except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
            raise _BadPart(f"is truncated or corrupt ({_library_reason(exc, part)})") from None
        nulls = [name for name in required if table.column(name).null_count]
        if nulls:
            raise _BadPart(f"is corrupt (nulls in {', '.join(nulls)}, which every row has)")
        yield table


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
