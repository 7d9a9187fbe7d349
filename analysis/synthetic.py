"""Synthetic captures in the exact on-disk format of :mod:`fusewb.contract.schema`, for tests and benchmarks.

:func:`write_capture` builds a capture directory from columns (a mapping of column name to numpy
array, list or pyarrow array) or a list of row dicts per table; missing columns get defaults.
Captures of the current schema get ``meta.json`` ``histograms`` of their ended rows plus the
fast events the tracer counts without rows (``counted_only``), as the tracer does, and
``row_threshold_ms`` (every event a row unless given); ``make_meta(schema_version=1)`` writes a
capture as fusewb wrote them before the histograms (rows and counters only).
:func:`synthetic_capture` makes a large random but realistic capture (modern stacks of every
path, WRITE requests, throttling, reclaim and compaction) with numpy and pyarrow only, fast enough
for 10M-event benchmarks. :data:`EXAMPLE_STACKS` holds the kernel stacks seen on 6.18.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fusewb.contract.histogram import MAX_MSB, SUB_BITS, Histogram
from fusewb.contract.meta import initial_meta
from fusewb.contract.schema import FUSE_OPCODES, SCHEMA_VERSION, TABLE_SPECS, TABLES, part_name

__all__ = [
    "DEFAULT_PROBES",
    "DEFAULT_MOUNT",
    "EXAMPLE_STACKS",
    "make_meta",
    "table_from",
    "histograms_of",
    "write_capture",
    "synthetic_capture",
]

START_NS = 1_000_000_000_000  # monotonic start of synthetic captures (1000 s after boot)
START_EPOCH_NS = 1_790_000_000_000_000_000

DEFAULT_PROBES: list[str] = [
    "tracepoint:writeback:folio_wait_writeback",
    "raw_tracepoint:sched_switch",
    "tracepoint:fuse:fuse_request_send",
    "tracepoint:fuse:fuse_request_end",
    "tracepoint:writeback:balance_dirty_pages",
    "tracepoint:vmscan:mm_vmscan_direct_reclaim_begin",
    "tracepoint:vmscan:mm_vmscan_direct_reclaim_end",
    "tracepoint:vmscan:mm_vmscan_memcg_reclaim_begin",
    "tracepoint:vmscan:mm_vmscan_memcg_reclaim_end",
    "tracepoint:vmscan:mm_vmscan_lru_shrink_inactive",
    "tracepoint:vmscan:mm_vmscan_throttled",
    "tracepoint:migrate:mm_migrate_pages_start",
    "tracepoint:migrate:mm_migrate_pages",
    "tracepoint:compaction:mm_compaction_begin",
    "tracepoint:compaction:mm_compaction_end",
]

DEFAULT_MOUNT: dict[str, Any] = {
    "mountpoint": "/mnt/fusewb",
    "fstype": "fuse.pyfuse3",
    "source": "fusewb",
    "major": 0,
    "minor": 52,
    "bdi": "0:52",
    "connection": 52,
    "max_ratio": "1",
    "strict_limit": "0",
}

# Kernel stacks of folio_wait_writeback on 6.18 (innermost first), one per path.
EXAMPLE_STACKS: dict[str, list[str]] = {
    "fsync": [
        "folio_wait_writeback+0x2b/0xa0", "__filemap_fdatawait_range+0x8d/0x100",
        "file_write_and_wait_range+0x90/0xb0", "fuse_fsync+0x85/0x160",
        "__do_sys_msync+0x1e8/0x2b0", "do_syscall_64+0x82/0x190",
        "entry_SYSCALL_64_after_hwframe+0x76/0x7e",
    ],
    "close": [
        "folio_wait_writeback", "__filemap_fdatawait_range", "filemap_fdatawait_range",
        "__writeback_single_inode", "write_inode_now", "fuse_flush", "filp_flush",
        "__x64_sys_close", "do_syscall_64", "entry_SYSCALL_64_after_hwframe",
    ],
    "migration": [
        "folio_wait_writeback", "migrate_pages_batch", "migrate_pages_sync", "migrate_pages",
        "__compact_zone", "compact_node", "sysctl_compaction_handler", "proc_sys_call_handler",
        "vfs_write", "ksys_write", "do_syscall_64", "entry_SYSCALL_64_after_hwframe",
    ],
    "sync": [
        "folio_wait_writeback", "__filemap_fdatawait_range", "filemap_fdatawait_keep_errors",
        "wait_sb_inodes", "sync_inodes_sb", "sync_inodes_one_sb", "iterate_supers",
        "ksys_sync", "__do_sys_sync", "do_syscall_64", "entry_SYSCALL_64_after_hwframe",
    ],
    "reclaim": [
        "folio_wait_writeback", "shrink_folio_list", "shrink_lruvec", "shrink_node",
        "do_try_to_free_pages", "try_to_free_mem_cgroup_pages", "try_charge_memcg",
        "__mem_cgroup_charge", "__filemap_add_folio", "filemap_add_folio",
        "page_cache_ra_unbounded", "filemap_get_pages", "filemap_read", "vfs_read",
    ],
    "page_mkwrite": [
        "folio_wait_writeback", "folio_wait_stable", "fuse_page_mkwrite", "do_page_mkwrite",
        "do_wp_page", "__handle_mm_fault", "handle_mm_fault", "do_user_addr_fault",
        "exc_page_fault", "asm_exc_page_fault",
    ],
    "truncate": [
        "folio_wait_writeback", "truncate_inode_pages_range", "truncate_pagecache",
        "fuse_do_setattr", "fuse_setattr", "notify_change", "do_truncate",
        "do_sys_ftruncate", "do_syscall_64", "entry_SYSCALL_64_after_hwframe",
    ],
    "write": [
        "folio_wait_writeback", "folio_wait_stable", "__filemap_get_folio",
        "fuse_write_begin", "generic_perform_write", "fuse_cache_write_iter", "vfs_write",
        "ksys_write", "do_syscall_64", "entry_SYSCALL_64_after_hwframe",
    ],
    "other": ["folio_wait_writeback", "[unknown]", "0xffffffffc0a1b2c3", "some_driver_fn"],
}


def make_meta(**overrides: Any) -> dict[str, Any]:
    """A complete ``meta.json`` for a synthetic capture; keyword arguments replace keys. Of the
    current schema, every event a row (``row_threshold_ms`` 0) unless given; with
    ``schema_version=1`` without the keys of later schemas."""
    meta = initial_meta(
        schema_version=SCHEMA_VERSION,
        host="synthetic",
        kernel_release="6.18.0-synthetic",
        plan="tracepoint",
        probes=list(DEFAULT_PROBES),
        mounts=[dict(DEFAULT_MOUNT)],
        start_monotonic_ns=START_NS,
        start_epoch_ns=START_EPOCH_NS,
        end_monotonic_ns=START_NS + 10_000_000_000,
        complete=True,
        lost_events={"total": 0, "per_cpu": [0, 0], "by_kind": {}},
        tables={},
    )
    if overrides.get("schema_version", SCHEMA_VERSION) >= 2:
        meta["row_threshold_ms"] = {"requests": 0.0, "waits": 0.0}
    meta.update(overrides)
    return meta


def _column_length(data: Mapping[str, Any]) -> int:
    lengths = {len(v) for v in data.values() if not np.isscalar(v) and v is not None}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


TableData = Mapping[str, Any] | Sequence[Mapping[str, Any]] | pa.Table | None


def table_from(name: str, data: TableData) -> pa.Table:
    """A pyarrow table of ``name``'s schema from columns or rows; defaults fill missing columns.

    In the requests table ``opcode_name`` defaults from ``opcode`` and ``end_*``/``error`` are
    null for ongoing rows unless given.
    """
    schema = TABLES[name]
    if data is None:
        return schema.empty_table()
    if isinstance(data, pa.Table):
        columns: dict[str, Any] = {n: data.column(n) for n in data.column_names}
    elif isinstance(data, Mapping):
        columns = dict(data)
    else:
        rows = list(data)
        keys = {k for row in rows for k in row}
        columns = {k: [row.get(k) for row in rows] for k in keys}
        if not rows:
            return schema.empty_table()
    length = _column_length(columns)
    defaults = dict(TABLE_SPECS[name].synthetic)  # columns a caller leaves out
    if name == "requests" and "opcode_name" not in columns:
        opcodes = np.asarray(columns.get("opcode", np.full(length, defaults["opcode"])))
        names = np.array([FUSE_OPCODES.get(int(o), str(o)) for o in np.unique(opcodes)], object)
        columns["opcode_name"] = names[np.searchsorted(np.unique(opcodes), opcodes)]
    arrays = []
    for fld in schema:
        value = columns.get(fld.name, defaults.get(fld.name))
        if value is None:
            arrays.append(pa.nulls(length, fld.type))
        elif np.isscalar(value):
            arrays.append(pa.array(np.full(length, value) if not isinstance(value, str)
                                   else [value] * length, fld.type))
        elif isinstance(value, (pa.Array, pa.ChunkedArray)):
            arrays.append(value.cast(fld.type))
        elif fld.name == "frames":
            arrays.append(pa.array(list(value), fld.type))
        else:
            arrays.append(pa.array(value, fld.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def _histogram(durations: np.ndarray) -> dict[str, Any]:
    """count, total_ns, max_ns and buckets of exact durations, as meta.json holds them."""
    return Histogram.of_values(durations).to_meta()


def _ended(tables: list[pa.Table], columns: list[str]) -> dict[str, np.ndarray]:
    """``columns`` of the rows that are not ongoing in ``tables`` (of one schema)."""
    table = pa.concat_tables(tables)
    ended = ~np.asarray(table.column("ongoing").fill_null(False).to_numpy(zero_copy_only=False),
                        dtype=bool)
    return {c: table.column(c).to_numpy(zero_copy_only=False)[ended] for c in columns}


def _groups(keys: list[np.ndarray]) -> list[tuple[tuple[Any, ...], np.ndarray]]:
    """(key values, row positions) of each distinct combination of ``keys``, sorted."""
    if not len(keys[0]):
        return []
    codes = [np.unique(k.astype(str), return_inverse=True)[1] for k in keys]
    combined = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)[1].reshape(-1)
    out = []
    for group in range(int(combined.max()) + 1):
        rows = np.flatnonzero(combined == group)
        out.append((tuple(k[rows[0]] for k in keys), rows))
    return sorted(out, key=lambda item: tuple(map(str, item[0])))


def histograms_of(requests: list[pa.Table], waits: list[pa.Table]) -> dict[str, Any]:
    """``meta.json`` ``histograms`` of the ended rows of ``requests`` and ``waits`` tables (rows
    written to the capture and fast events counted without rows), as the tracer writes them."""
    out: dict[str, Any] = {"sub_bits": SUB_BITS, "max_msb": MAX_MSB, "requests": [], "waits": []}
    if requests:
        r = _ended(requests, ["connection", "bdi", "opcode", "opcode_name", "duration_ns", "len",
                              "error"])
        for (connection, bdi, opcode, name), rows in _groups(
                [r["connection"], r["bdi"], r["opcode"], r["opcode_name"]]):
            errors = np.asarray([e is not None and e == e and e != 0 for e in r["error"][rows]])
            out["requests"].append({
                "connection": int(connection), "bdi": str(bdi), "opcode": int(opcode),
                "opcode_name": str(name), "errors": int(errors.sum()),
                "bytes": int(np.nansum(r["len"][rows].astype("float64"))),
                **_histogram(r["duration_ns"][rows].astype(np.int64))})
    if waits:
        w = _ended(waits, ["bdi", "stack_id", "duration_ns"])
        for (bdi, stack_id), rows in _groups([w["bdi"], w["stack_id"]]):
            out["waits"].append({"bdi": str(bdi), "stack_id": int(stack_id),
                                 **_histogram(w["duration_ns"][rows].astype(np.int64))})
    return out


def write_capture(
    path: str | os.PathLike,
    meta: Mapping[str, Any] | None = None,
    *,
    part_rows: int | None = None,
    write_meta: bool = True,
    counted_only: Mapping[str, TableData] | None = None,
    **tables: TableData,
) -> Path:
    """Write a capture directory: ``write_capture(dir, meta, waits=..., requests=..., ...)``.

    Tables left out are not written (as when no such event happened). ``part_rows`` splits each
    table into Parquet parts of that many rows. ``meta["tables"]`` gets the row counts. Of the
    current schema (``meta`` without ``schema_version`` 1) and without ``histograms`` given,
    ``meta["histograms"]`` counts the ended requests and waits of the tables and of
    ``counted_only`` (table -> rows counted in the kernel that have no row, e.g. the fast ones).
    """
    unknown = (set(tables) | set(counted_only or {})) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown tables: {sorted(unknown)}")
    folder = Path(path)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    full_meta = make_meta(**dict(meta or {}))
    counts: dict[str, int] = {}
    written: dict[str, list[pa.Table]] = {"requests": [], "waits": []}
    for name, data in (counted_only or {}).items():
        if name in written and data is not None:
            written[name].append(table_from(name, data))
    for name, data in tables.items():
        if data is None:
            continue
        table = table_from(name, data)
        written.get(name, []).append(table)
        counts[name] = table.num_rows
        (folder / name).mkdir(mode=0o700, exist_ok=True)
        step = part_rows or max(table.num_rows, 1)
        for number, offset in enumerate(range(0, max(table.num_rows, 1), step), 1):
            pq.write_table(table.slice(offset, step), folder / part_name(name, number))
    if not full_meta.get("tables"):
        full_meta["tables"] = counts
    if full_meta["schema_version"] >= 2 and "histograms" not in full_meta:
        full_meta["histograms"] = histograms_of(written["requests"], written["waits"])
    if write_meta:
        (folder / "meta.json").write_text(json.dumps(full_meta, indent=1))
    return folder


def _strings(pool: Sequence[str], codes: np.ndarray) -> pa.Array:
    dictionary = pa.array(list(pool), pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), dictionary).cast(
        pa.string()
    )


def synthetic_capture(
    path: str | os.PathLike,
    n_waits: int,
    n_requests: int | None = None,
    *,
    seed: int = 0,
    duration_s: float = 60.0,
    host: str = "synthetic",
    part_rows: int = 1_000_000,
    row_threshold_ms: float = 0.0,
    schema_version: int = SCHEMA_VERSION,
) -> Path:
    """A large random capture: ``n_waits`` waits over every path, ``n_requests`` WRITEs and more.

    Vectorised (numpy/pyarrow); a few seconds for 10M events. Durations are log-normal, a small
    share of waits and requests are ongoing at the end, the server answers from 2 threads.
    Waits and requests that ended faster than ``row_threshold_ms`` are only in the histograms,
    as the tracer leaves them; ``schema_version`` 1: every one a row, no histograms.
    """
    rng = np.random.default_rng(seed)
    n_requests = n_waits if n_requests is None else n_requests
    span = int(duration_s * 1e9)
    paths = list(EXAMPLE_STACKS)
    stacks = {"stack_id": np.arange(len(paths), dtype=np.int64),
              "frames": [EXAMPLE_STACKS[p] for p in paths]}
    comms = ["writer", "dd", "postgres", "kcompactd0", "sync", "python3"]
    pids = rng.integers(0, len(comms), n_waits)
    wait_ts = START_NS + np.sort(rng.integers(0, span, n_waits))
    wait_dur = np.minimum(rng.lognormal(15.0, 1.5, n_waits).astype(np.int64), span)
    wait_ongoing = rng.random(n_waits) < 0.001
    waits = {
        "ts_ns": wait_ts, "duration_ns": wait_dur, "ongoing": wait_ongoing,
        "pid": (2000 + pids).astype(np.int32), "tgid": (2000 + pids).astype(np.int32),
        "comm": _strings(comms, pids), "bdi": "0:52",
        "ino": rng.integers(2, 200, n_waits), "index": rng.integers(0, 1 << 18, n_waits),
        "stack_id": rng.integers(0, len(paths), n_waits), "source": "sched_switch",
    }
    req_ts = START_NS + np.sort(rng.integers(0, span, n_requests))
    req_dur = rng.lognormal(13.0, 1.2, n_requests).astype(np.int64)
    req_ongoing = rng.random(n_requests) < 0.0005
    server = rng.integers(0, 2, n_requests)
    requests = {
        "send_ts_ns": req_ts,
        "end_ts_ns": pa.array(req_ts + req_dur, pa.int64(), mask=req_ongoing),
        "duration_ns": req_dur, "ongoing": req_ongoing, "connection": 52, "bdi": "0:52",
        "unique": np.arange(1, n_requests + 1, dtype=np.int64) * 2,
        "opcode": np.where(rng.random(n_requests) < 0.9, 16, 3).astype(np.int32),
        "len": rng.integers(1, 33, n_requests) * 4096,
        "error": pa.array(np.zeros(n_requests, np.int32), mask=req_ongoing),
        "pid": 50, "tgid": 50, "comm": "kworker/u4:1",
        "end_pid": pa.array((3000 + server).astype(np.int32), mask=req_ongoing),
        "end_tgid": pa.array(np.full(n_requests, 3000, np.int32), mask=req_ongoing),
        "end_comm": pa.array(np.full(n_requests, "fusewb-server", object), mask=req_ongoing),
    }
    n_small = max(n_waits // 100, 1)
    throttle = {
        "ts_ns": START_NS + np.sort(rng.integers(0, span, n_small)), "pid": 2000, "tgid": 2000,
        "comm": "writer", "bdi": "0:52", "pause_ms": rng.integers(1, 200, n_small),
        "period_ms": 200, "paused_ms": 0, "think_ms": 0, "dirty": 5000, "limit": 20000,
        "setpoint": 15000, "wb_dirty": 300, "wb_setpoint": 200, "dirty_ratelimit": 100,
        "task_ratelimit": 50, "dirtied": 32,
    }
    kinds = ["direct_reclaim", "memcg_reclaim", "shrink_inactive", "vmscan_throttled",
             "migrate_pages", "compaction"]
    kind_codes = rng.integers(0, len(kinds), n_small)
    vm = {
        "ts_ns": START_NS + np.sort(rng.integers(0, span, n_small)),
        "duration_ns": rng.lognormal(14.0, 1.0, n_small).astype(np.int64),
        "kind": _strings(kinds, kind_codes), "pid": 80, "tgid": 80, "comm": "kswapd0",
        "nr_scanned": rng.integers(0, 512, n_small), "nr_reclaimed": rng.integers(0, 256, n_small),
        "nr_dirty": 0, "nr_writeback": rng.integers(0, 32, n_small), "nr_immediate": 0,
        "succeeded": rng.integers(0, 64, n_small), "failed": rng.integers(0, 4, n_small),
        "mode": 2, "reason": 1, "status": 0, "usec_delayed": 100_000,
    }
    meta = make_meta(
        host=host,
        schema_version=schema_version,
        end_monotonic_ns=START_NS + span,
        server_threads=[
            {"connection": 52, "bdi": "0:52", "tgid": 3000, "pid": 3000 + i,
             "comm": "fusewb-server", "replies": int(np.sum(server == i))}
            for i in range(2)
        ],
    )
    if schema_version >= 2:
        meta["row_threshold_ms"] = {"requests": float(row_threshold_ms),
                                    "waits": float(row_threshold_ms)}
    rows, fast = {}, {}
    for name, data in (("waits", waits), ("requests", requests)):
        rows[name], fast[name] = _split_at(table_from(name, data), row_threshold_ms)
    return write_capture(
        path, meta, part_rows=part_rows, counted_only=fast, throttle=throttle, vm=vm,
        stacks=stacks, **rows,
    )


def _split_at(table: pa.Table, threshold_ms: float) -> tuple[pa.Table, pa.Table]:
    """The rows of ``table`` the tracer writes at a row threshold of ``threshold_ms`` (ongoing
    ones and those that took that long) and the others (only counted in the histograms)."""
    kept = pc.or_(table.column("ongoing"), pc.greater_equal(
        table.column("duration_ns"), int(threshold_ms * 1_000_000)))
    return table.filter(kept), table.filter(pc.invert(kept))
