"""One pass over a capture's big tables (requests, then waits) by one of three engines, merged
into a :class:`Scan` that :func:`flags` and the reports read.

Engines (``ENGINES``) differ only in how they cut the tables into slices; each slice goes through
the same partial functions of the question modules and the partials through the same combine
step (:mod:`fusewb.analysis.partials`), so their answers are equal:

- ``pandas``: the whole tables, loaded once (:meth:`Capture.table`); what ``waits()`` and the
  other row-level questions use. Memory: every table decoded, several times over.
- ``streaming``: slices of about ``capture.BATCH_ROWS`` rows (small parts of a host gathered,
  big ones read in batches), only the columns the questions read (and those every row must
  have, to check the part; a part with one bad batch counts as unreadable, as with the pandas
  engine); a slice is dropped once its partials are made. Memory: about two slices decoded,
  the small tables (stacks, throttle, vm, read whole) and the partials (8 bytes per wait and
  per request for exact percentiles, plus one row per group).

Every engine reads the in-kernel histograms (``meta.json``) in the same combine step, in this
process, so captures with histograms get the same counts and percentiles from each.
- ``dask``: each part as a task on a Dask cluster (a local one of ``LOCAL_WORKERS`` processes,
  or ``scheduler``, whose workers must have fusewb and read the capture at the same path); the
  partials come back to this process, which combines them.

Order: the vm table first (the times reclaim was throttled), then requests (server threads,
in-flight WRITEs at those times), then waits (which need the server threads).
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fusewb.analysis import capture
from fusewb.analysis.capture import (
    Capture,
    check_table,
    frame_with_host,
    read_part,
    unreadable_table,
)
from fusewb.analysis.findings import FLAGS
from fusewb.analysis.partials import combine_inflight, with_order
from fusewb.analysis.requests import (
    by_opcode_partial,
    combine_by_opcode,
    derive_requests,
    fuse_requests,
)
from fusewb.analysis.rules import Flag, combine_flag_partials, flag_partials
from fusewb.analysis.scanned import (
    Scan,
    answered_partial,
    inflight_writes_partial,
    server_tgids,
    throttle_times,
    unseen_fuse_waits,
)
from fusewb.analysis.waiting import (
    combine_wait_paths,
    derive_waits,
    stack_paths,
    wait_paths_partial,
    waits,
)
from fusewb.contract import defaults
from fusewb.contract.errors import FusewbError
from fusewb.contract.extras import require
from fusewb.contract.schema import TABLE_SPECS, TABLES

__all__ = ["ENGINES", "Scan", "scan", "BIG_TABLES", "READ_COLUMNS", "CONNECT_TIMEOUT_S"]

ENGINES = ("pandas", "streaming", "dask")
BIG_TABLES = tuple(sorted(table for table, spec in TABLE_SPECS.items() if spec.big))
SMALL_TABLES = tuple(sorted(table for table, spec in TABLE_SPECS.items() if not spec.big))
# The columns the questions read of each big table (capture.read_part adds the required ones).
READ_COLUMNS: dict[str, tuple[str, ...]] = {
    "requests": ("send_ts_ns", "end_ts_ns", "duration_ns", "ongoing", "connection", "bdi",
                 "unique", "opcode_name", "len", "error", "pid", "tgid", "comm", "end_tgid"),
    "waits": ("ts_ns", "duration_ns", "ongoing", "pid", "tgid", "comm", "bdi", "ino", "stack_id"),
}
_TIME = {"requests": "send_ts_ns", "waits": "ts_ns"}
CONNECT_TIMEOUT_S = 10
LOCAL_WORKERS = 2
TASK_BYTES = 64 << 20  # dask: consecutive parts of a host's table per task, on disk


@dataclass(frozen=True)
class _Params:
    threshold_ms: float
    times: dict[str, np.ndarray]
    servers: set[tuple[str, str, int]]
    flags: tuple[Flag, ...]


@dataclass(frozen=True)
class _PartRead:
    """One part read: its rows, or the damage line when it is unusable."""

    host: str
    table: str
    part: Path
    rows: int
    damage: str | None


@dataclass
class _Chunk:
    """What a run of parts of one host's table gave: the partials of its slices, each part."""

    partials: list[dict[str, Any]]
    reads: list[_PartRead]


def _slice_partials(cap: Capture, table: str, rows: pd.DataFrame, params: _Params
                    ) -> dict[str, Any]:
    """Every partial of a slice of ``table`` (derived columns and order columns present)."""
    flagged = flag_partials(table, rows, params.threshold_ms, params.servers, params.flags)
    if table == "requests":
        return {"opcodes": by_opcode_partial(rows), "flags": flagged,
                "answered": answered_partial(rows),
                "inflight": inflight_writes_partial(rows, params.times)}
    return {"paths": wait_paths_partial(rows), "flags": flagged}


def _slice(cap: Capture, host: str, table: str, batches: list[pa.Table], params: _Params
           ) -> dict[str, Any]:
    """The partials of checked Arrow batches of one host's table (with their ``_os`` column)."""
    frame = frame_with_host(pa.concat_tables(batches), host, cap.hosts)
    derive = derive_requests if table == "requests" else derive_waits
    rows = with_order(derive(cap, frame), cap.hosts, _TIME[table], first_seq=None)
    return _slice_partials(cap, table, rows, params)


def _chunk(cap: Capture, host: str, table: str, parts: list[tuple[Path, int]], params: _Params,
           progress: Callable[[str], None] | None = None) -> _Chunk:
    """Parts of one host's table in table order, each with its first sequence number (also a
    Dask task): their rows gathered into slices of about ``capture.BATCH_ROWS`` rows (several
    small parts, or one big part's batches) whose partials are made at once. A part with an
    unusable batch gives nothing: what its earlier batches made is dropped."""
    limit = capture.BATCH_ROWS  # read at call time: tests shrink it
    out = _Chunk([], [])
    pending: list[pa.Table] = []
    pending_rows = 0
    for number, (part, seq) in enumerate(parts, 1):
        if progress is not None:
            progress(f"reading {host} {table} part {number}/{len(parts)}")
        mine: list[pa.Table] = []
        made: list[dict[str, Any]] = []
        count = {"read": 0, "held": 0}

        def use(batch: pa.Table, mine: list[pa.Table] = mine, made: list[dict[str, Any]] = made,
                count: dict[str, int] = count, seq: int = seq) -> None:
            first = seq + count["read"]
            order = pa.array(np.arange(first, first + len(batch), dtype=np.int64))
            mine.append(batch.append_column("_os", order))
            count["read"] += len(batch)
            count["held"] += len(batch)
            if count["held"] >= limit:
                made.append(_slice(cap, host, table, mine, params))
                mine.clear()
                count["held"] = 0

        damage = read_part(table, part, READ_COLUMNS[table], use, limit)
        if damage is not None:
            out.reads.append(_PartRead(host, table, part, 0, damage))
            continue
        out.reads.append(_PartRead(host, table, part, count["read"], None))
        out.partials.extend(made)
        if pending_rows and pending_rows + count["held"] > limit:  # slices stay under limit
            out.partials.append(_slice(cap, host, table, pending, params))
            pending, pending_rows = [], 0
        pending.extend(mine)
        pending_rows += count["held"]
        if pending_rows >= limit:
            out.partials.append(_slice(cap, host, table, pending, params))
            pending, pending_rows = [], 0
    if pending_rows:
        out.partials.append(_slice(cap, host, table, pending, params))
    return out


def _tasks(cap: Capture, table: str) -> dict[str, list[tuple[Path, int]]]:
    """host -> (part, first sequence number) of every part of ``table``, in table order."""
    tasks: dict[str, list[tuple[Path, int]]] = {}
    number = 0
    for src in cap.sources:
        for part in check_table(src, table):
            tasks.setdefault(src.host, []).append((part, number << 32))
            number += 1
    return tasks


Runner = Callable[[Capture, str, _Params], list[_Chunk]]


def _run_local(progress: Callable[[str], None] | None) -> Runner:
    def run(cap: Capture, table: str, params: _Params) -> list[_Chunk]:
        return [_chunk(cap, host, table, parts, params, progress)
                for host, parts in _tasks(cap, table).items()]

    return run


def _check_reads(chunks: list[_Chunk]) -> None:
    """CaptureError for a table of a host of which no part was readable."""
    by_table: dict[tuple[str, str], list[_PartRead]] = {}
    for read in (r for c in chunks for r in c.reads):
        by_table.setdefault((read.host, read.table), []).append(read)
    for mine in by_table.values():
        if all(r.damage is not None for r in mine):
            first = mine[0]
            raise unreadable_table(first.part, str(first.damage).split(" ", 1)[1])


def _merge(chunks: list[_Chunk], key: str) -> list[Any]:
    return [partials[key] for chunk in chunks for partials in chunk.partials]


def _small_tables(cap: Capture) -> None:
    for table in SMALL_TABLES:
        cap.table(table)


def _whole(cap: Capture, table: str, params: _Params) -> list[_Chunk]:
    """The pandas engine: the whole table as one slice."""
    if not cap.recorded(table):
        return []
    rows = fuse_requests(cap) if table == "requests" else waits(cap)
    rows = with_order(rows, cap.hosts, _TIME[table])
    return [_Chunk([_slice_partials(cap, table, rows, params)], [])]


def scan(cap: Capture, threshold_ms: float = defaults.THRESHOLD_MS, engine: str = "pandas",
         scheduler: str | None = None,
         progress: Callable[[str], None] | None = None,
         declared: Iterable[Flag] = FLAGS) -> Scan:
    """Answer the big-table questions of ``cap`` with ``engine`` (one of :data:`ENGINES`);
    ``scheduler``: the address of a running Dask scheduler (dask engine; default a local
    cluster); ``declared``: the flags whose rows to select (:data:`findings.FLAGS`). Raises
    CaptureError like :meth:`Capture.table` for unreadable tables."""
    declared = tuple(declared)
    if engine not in ENGINES:
        raise FusewbError(f"unknown analysis engine {engine!r}", f"use one of {', '.join(ENGINES)}")
    if engine == "pandas":
        for table in TABLES:
            cap.table(table)
        return _scan(cap, threshold_ms, declared, _whole, whole=True)
    _small_tables(cap)
    if cap.recorded("stacks"):
        stack_paths(cap)  # once, here: every part's waits are attributed with it
    if engine == "streaming":
        return _scan(cap, threshold_ms, declared, _run_local(progress))
    with _dask_client(scheduler) as client:
        result = _scan(cap, threshold_ms, declared, _run_dask(client, progress))
        result.worker_peak_rss = _worker_peaks(client)
    return result


def _scan(cap: Capture, threshold_ms: float, declared: tuple[Flag, ...], run: Runner,
          whole: bool = False) -> Scan:
    params = _Params(threshold_ms, throttle_times(cap), set(), declared)
    requests = run(cap, "requests", params)
    _check_reads(requests)
    servers = server_tgids(cap, _merge(requests, "answered"))
    params = _Params(threshold_ms, params.times, servers, declared)
    waits_out = run(cap, "waits", params)
    _check_reads(waits_out)
    unseen = with_order(unseen_fuse_waits(cap), cap.hosts, "", host_index=len(cap.hosts))
    unseen_partials = flag_partials("waits", unseen, threshold_ms, servers,
                                    declared)  # after every wait
    waits_partials = [partials for chunk in waits_out for partials in chunk.partials]
    rows: dict[tuple[str, str], int] = {}
    damage: dict[str, list[str]] = {}
    if whole:
        for table in TABLES:
            counts = cap.table(table)["host"].astype(object).value_counts()
            rows.update({(str(h), table): int(n) for h, n in counts.items()})
        damage = {host: cap.damage(host) for host in cap.hosts}
    else:
        for table in SMALL_TABLES:
            counts = cap.table(table)["host"].astype(object).value_counts()
            rows.update({(str(h), table): int(n) for h, n in counts.items()})
        damage = {host: cap.damage_read(host) for host in cap.hosts}
        for read in (r for chunk in requests + waits_out for r in chunk.reads):
            key = (read.host, read.table)
            rows[key] = rows.get(key, 0) + read.rows
            if read.damage is not None:
                damage.setdefault(read.host, []).append(read.damage)
        order = list(TABLES)
        damage = {host: sorted(lines, key=lambda line: order.index(line.split("/", 1)[0]))
                  for host, lines in damage.items()}
    return Scan(
        wait_paths=combine_wait_paths(cap, [p["paths"] for p in waits_partials]),
        flag_rows=combine_flag_partials(
            _merge(requests, "flags") + [p["flags"] for p in waits_partials] + [unseen_partials],
            declared),
        by_opcode=combine_by_opcode(cap, _merge(requests, "opcodes")),
        servers=servers,
        inflight=combine_inflight(_merge(requests, "inflight")),
        rows=rows,
        damage=damage,
    )


@contextmanager
def _dask_client(scheduler: str | None) -> Iterator[Any]:
    """A client of the scheduler at ``scheduler``, or of a local cluster of LOCAL_WORKERS
    single-threaded worker processes closed on exit."""
    require("dask")
    from dask.distributed import Client, LocalCluster  # noqa: PLC0415 (heavy, dask only)

    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise FusewbError(
                f"cannot reach the Dask scheduler at {scheduler} ({str(exc).splitlines()[0]})",
                "start one (`dask scheduler` and `dask worker ADDRESS`) or drop --scheduler "
                "for a local cluster") from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(n_workers=LOCAL_WORKERS, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    try:
        client = Client(cluster, timeout=f"{CONNECT_TIMEOUT_S}s")
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _task_groups(parts: list[tuple[Path, int]]) -> list[list[tuple[Path, int]]]:
    """Consecutive parts of one host's table in groups of about TASK_BYTES on disk."""
    groups: list[list[tuple[Path, int]]] = [[]]
    size = 0
    for part, seq in parts:
        try:
            bytes_ = os.stat(part).st_size
        except OSError:
            bytes_ = 0  # the task reports it unreadable
        if groups[-1] and size + bytes_ > TASK_BYTES:
            groups.append([])
            size = 0
        groups[-1].append((part, seq))
        size += bytes_
    return [g for g in groups if g]


def _run_dask(client: Any, progress: Callable[[str], None] | None) -> Runner:
    from dask.distributed import as_completed  # noqa: PLC0415

    shipped: dict[int, Any] = {}

    def run(cap: Capture, table: str, params: _Params) -> list[_Chunk]:
        groups = [(host, group) for host, parts in _tasks(cap, table).items()
                  for group in _task_groups(parts)]
        if not groups:
            return []
        if id(cap) not in shipped:
            small = cap.detached(["derived:stack_paths"])
            shipped[id(cap)] = client.scatter(small, broadcast=True)
        # absolute paths: a remote worker's working directory is not ours
        futures = [client.submit(_chunk, shipped[id(cap)], host, table,
                                 [(part.absolute(), seq) for part, seq in group], params,
                                 pure=False) for host, group in groups]
        sizes = {future.key: len(group) for future, (_, group) in zip(futures, groups)}
        total, done = sum(sizes.values()), 0
        for future in as_completed(futures):
            done += sizes[future.key]
            if progress is not None:
                progress(f"dask: {table} parts read {done}/{total}")
        named = {part.absolute(): part for _, group in groups for part, _ in group}
        chunks = client.gather(futures)
        for chunk in chunks:  # parts named as the other engines name them
            chunk.reads = [replace(r, part=named[r.part]) for r in chunk.reads]
        return chunks

    return run


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker_peaks(client: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in client.run(_peak_rss).items()}

