"""A capture as a Perfetto timeline (``fusewb export CAPTURE --perfetto -o FILE``).

Format: Perfetto's native protobuf trace (a ``Trace`` of ``TracePacket`` messages holding
``TrackDescriptor`` and ``TrackEvent``), built with the classes of Perfetto's own Python
package (PyPI ``perfetto``: ``perfetto.trace_builder.proto_builder`` and the
``perfetto_trace_pb2`` messages it ships) and opened by ui.perfetto.dev and trace_processor.
The package's trace_processor needs a binary fetched from the network, so this module also
reads a trace back with the same messages (:func:`read_trace`), for tests and pictures.

What is in it, for one host of the capture:

* a process track per tgid and a thread track per task (pid = thread id) holding the task's
  waits on FUSE writeback (rows: in a capture with in-kernel histograms those from its row
  threshold on and those going on at the end; the trace holds no count or percentile) as slices named by the wait's path (``fsync``, ``reclaim``, ...;
  ``(ongoing)`` when tracing stopped first) with arguments path, stack (summary), frame,
  inode, index, bdi, mount, duration_ms and ongoing;
* per FUSE connection, its requests (rows) as slices named by opcode (arguments unique, len,
  error, sender and answering server thread), on as many lanes (tracks of the same name)
  as requests were in flight at once;
* counter tracks: WRITEs in flight and the pages they carry (bytes / 4096: the folios
  under writeback that the server holds) per connection, from the rows (in a capture with
  in-kernel histograms only requests from its row threshold on have rows: the tracks are then
  named for them, e.g. ``WRITEs of 50 ms or more in flight``); and, where the task was throttled
  (``balance_dirty_pages``), the kernel's dirty count (dirty + writeback pages, global), its
  limit, and the bdi's dirty + writeback pages. The capture has no other sample of dirty or
  writeback pages, so these counters only move when some task is throttled.

Timestamps are the capture's ``CLOCK_MONOTONIC`` nanoseconds written on the trace's default
clock: the timeline starts where the capture starts, times are not wall-clock times.
Events are written sorted by time, one packet each; every name is written out (no interning),
so no packet depends on incremental state. Events wait for the sort as numpy arrays; a slice's
name and arguments are built from the capture's columns only when its packet is written.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture
from fusewb.analysis.histograms import row_thresholds
from fusewb.analysis.tables import kernel_ino
from fusewb.contract.errors import FusewbError
from fusewb.contract.extras import require

__all__ = ["export_perfetto", "choose_host", "read_trace", "ExportSummary", "TraceContents",
           "PAGE_BYTES"]

PAGE_BYTES = 4096
SEQUENCE = 0x46575342  # "FWSB": the trusted packet sequence of every packet
_END, _BEGIN, _COUNTER = 0, 1, 2  # event kinds; at one time an end sorts before the others

Payload = Callable[[int], tuple[str, dict[str, Any]]]  # row -> slice name and arguments


@dataclass
class ExportSummary:
    """What an export wrote."""

    path: Path
    host: str
    tasks: int
    waits: int
    requests: int
    counters: int
    packets: int


@dataclass
class _Track:
    uuid: int
    descriptor: dict[str, Any]


@dataclass
class _Builder:
    """Tracks, and timed events kept as arrays until they are sorted and written."""

    tracks: list[_Track] = field(default_factory=list)
    chunks: list[dict[str, np.ndarray]] = field(default_factory=list)
    payloads: list[Payload] = field(default_factory=list)
    next_uuid: int = 1

    def track(self, **descriptor: Any) -> int:
        uuid = self.next_uuid
        self.next_uuid += 1
        self.tracks.append(_Track(uuid, descriptor))
        return uuid

    def _chunk(self, ts: np.ndarray, kind: int, track: np.ndarray, source: int, row: np.ndarray,
               value: np.ndarray) -> None:
        n = len(ts)
        self.chunks.append({
            "ts": np.asarray(ts, dtype=np.int64), "kind": np.full(n, kind, dtype=np.int8),
            "track": np.broadcast_to(np.asarray(track, dtype=np.int64), (n,)),
            "source": np.full(n, source, dtype=np.int32),
            "row": np.broadcast_to(np.asarray(row, dtype=np.int64), (n,)),
            "value": np.broadcast_to(np.asarray(value, dtype="float64"), (n,)),
        })

    def slices(self, tracks: np.ndarray, begins: np.ndarray, ends: np.ndarray,
               payload: Payload) -> None:
        """Slices on ``tracks`` from ``begins`` to ``ends``; ``payload(i)`` names slice i."""
        source = len(self.payloads)
        self.payloads.append(payload)
        rows = np.arange(len(begins), dtype=np.int64)
        ends = np.maximum(ends, begins + 1)  # a begin and an end at one time would sort end first
        self._chunk(begins, _BEGIN, tracks, source, rows, np.zeros(1))
        self._chunk(ends, _END, tracks, source, rows, np.zeros(1))

    def counter(self, track: int, ts: np.ndarray, values: np.ndarray) -> None:
        self._chunk(ts, _COUNTER, np.array(track), -1, np.zeros(1, dtype=np.int64), values)

    def events(self) -> Iterator[tuple[int, int, int, int, int, float]]:
        """(ts, kind, track, source, row, value) of every event, by time; at one time ends
        first, then in the order added."""
        if not self.chunks:
            return
        columns = {key: np.concatenate([c[key] for c in self.chunks]) for key in self.chunks[0]}
        order = np.lexsort((columns["kind"] != _END, columns["ts"]))
        for i in order:
            yield (int(columns["ts"][i]), int(columns["kind"][i]), int(columns["track"][i]),
                   int(columns["source"][i]), int(columns["row"][i]), float(columns["value"][i]))


def _lanes(begins: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A lane per interval such that intervals on one lane do not overlap (greedy, by begin)."""
    lanes = np.zeros(len(begins), dtype=np.int64)
    free: list[tuple[int, int]] = []  # (end, lane) of the lanes in use
    count = 0
    for i in np.argsort(begins, kind="stable"):
        if free and free[0][0] <= begins[i]:
            _, lane = heapq.heappop(free)
        else:
            lane, count = count, count + 1
        lanes[i] = lane
        heapq.heappush(free, (int(ends[i]), lane))
    return lanes


def _value(value: Any) -> Any:
    """A DataFrame cell as a plain Python value for an argument (None when missing)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def choose_host(cap: Capture, host: str | None) -> str:
    """The host to export: ``host`` (FusewbError when the capture lacks it), else the only one."""
    if host is None:
        if len(cap.hosts) > 1:
            raise FusewbError(f"{cap.path} holds captures of {len(cap.hosts)} hosts "
                              f"({', '.join(cap.hosts)})", "choose one with --host")
        return cap.hosts[0]
    if host not in cap.hosts:
        raise FusewbError(f"{cap.path} has no host {host!r}",
                          f"choose one of {', '.join(cap.hosts)}")
    return host


def _add_waits(build: _Builder, cap: Capture, host: str) -> tuple[int, int]:
    """Thread tracks with their waits; (tasks, waits)."""
    if not cap.recorded("waits"):
        return 0, 0
    from fusewb.analysis.waiting import waits  # noqa: PLC0415

    frame = waits(cap)
    frame = frame[frame["host"] == host]
    if frame.empty:
        return 0, 0
    processes: dict[int, int] = {}
    begins = frame["ts_ns"].to_numpy(dtype=np.int64)
    ends = begins + np.round(frame["duration_ms"].to_numpy(dtype="float64") * 1e6).astype(np.int64)
    tracks = np.zeros(len(frame), dtype=np.int64)
    pids = frame["pid"].to_numpy()
    comms = frame["comm"].astype(str).to_numpy()
    tasks = 0
    for (tgid, pid), positions in frame.groupby(["tgid", "pid"], sort=True).indices.items():
        comm = str(comms[positions[-1]])
        if tgid not in processes:
            leader = comms[pids == tgid]
            name = str(leader[-1]) if len(leader) else comm
            processes[tgid] = build.track(process={"pid": int(tgid), "process_name": name})
        lanes = _lanes(begins[positions], ends[positions])
        lane_tracks = [build.track(parent=processes[tgid], thread={
            "pid": int(tgid), "tid": int(pid), "thread_name": comm})]
        lane_tracks += [build.track(parent=processes[tgid], name=f"{comm} {pid} overlapping waits")
                        for _ in range(int(lanes.max()))]
        tracks[positions] = np.asarray(lane_tracks)[lanes]
        tasks += 1
    columns = {name: frame[name].tolist() for name in
               ("path", "stack", "frame", "ino", "index", "bdi", "mount", "duration_ms",
                "ongoing")}

    def payload(i: int) -> tuple[str, dict[str, Any]]:
        path, ongoing = str(columns["path"][i]), bool(columns["ongoing"][i])
        args = {name: _value(values[i]) for name, values in columns.items()}
        return path + (" (ongoing)" if ongoing else ""), {**args, "path": path, "ongoing": ongoing,
                                                           "ino": kernel_ino(args["ino"])}

    build.slices(tracks, begins, ends, payload)
    return tasks, len(frame)


def _request_ends(frame: pd.DataFrame) -> np.ndarray:
    """End of each request; an ongoing one ends where tracing stopped (send + waited so far)."""
    begins = frame["send_ts_ns"].to_numpy(dtype=np.int64)
    ends = frame["end_ts_ns"].astype("float64").to_numpy(copy=True)
    missing = np.isnan(ends)
    ends[missing] = begins[missing] + frame["duration_ms"].to_numpy(dtype="float64")[missing] * 1e6
    return np.round(ends).astype(np.int64)


def _add_requests(build: _Builder, cap: Capture, host: str) -> tuple[int, int]:
    """Per connection: request slices on lanes and WRITE counters; (requests, counters)."""
    if not cap.recorded("requests"):
        return 0, 0
    from fusewb.analysis.requests import WRITE, fuse_requests  # noqa: PLC0415

    frame = fuse_requests(cap)
    frame = frame[frame["host"] == host].reset_index(drop=True)
    counters = 0
    tracks = np.zeros(len(frame), dtype=np.int64)
    begins = frame["send_ts_ns"].to_numpy(dtype=np.int64)
    ends = _request_ends(frame)
    for connection, positions in frame.groupby("connection", sort=True).indices.items():
        group = frame.iloc[positions]
        bdi, mount = _value(group["bdi"].iloc[0]), _value(group["mount"].iloc[0])
        label = f"FUSE {mount or bdi or connection}"
        root = build.track(name=f"{label} (connection {connection})")
        lanes = _lanes(begins[positions], ends[positions])
        lane_tracks = np.asarray([build.track(parent=root, name=f"{label} requests")
                                  for _ in range(int(lanes.max()) + 1)])
        tracks[positions] = lane_tracks[lanes]
        writes = (group["opcode_name"] == WRITE).to_numpy()
        if writes.any():
            counters += _inflight_counters(
                build, root, f"{label} {_writes_with_rows(cap, host)}", begins[positions][writes],
                ends[positions][writes], group["len"].fillna(0).to_numpy(dtype=np.int64)[writes])
    columns = {name: frame[name].tolist() for name in
               ("opcode_name", "unique", "len", "error", "ongoing", "duration_ms", "pid", "comm",
                "end_pid", "end_comm")}
    renamed = {"end_pid": "server_pid", "end_comm": "server_comm"}

    def payload(i: int) -> tuple[str, dict[str, Any]]:
        args = {renamed.get(name, name): _value(values[i]) for name, values in columns.items()
                if name != "opcode_name"}
        args["ongoing"] = bool(args["ongoing"])
        return str(columns["opcode_name"][i]) + (" (ongoing)" if args["ongoing"] else ""), args

    build.slices(tracks, begins, ends, payload)
    return len(frame), counters


def _writes_with_rows(cap: Capture, host: str) -> str:
    """``WRITEs``, or ``WRITEs of N ms or more`` when only those have rows."""
    thresholds = row_thresholds(cap.source(host))
    if thresholds is None or thresholds["requests"] <= 0:
        return "WRITEs"
    return f"WRITEs of {thresholds['requests']:g} ms or more"


def _inflight_counters(build: _Builder, parent: int, label: str, begins: np.ndarray,
                       ends: np.ndarray, lengths: np.ndarray) -> int:
    """Counter tracks of the WRITEs (``label``: connection and which WRITEs) in flight and their
    pages, one value per change."""
    count = build.track(parent=parent, name=f"{label} in flight", counter={})
    pages = build.track(parent=parent, name=f"{label} in flight (pages)", counter={})
    times = np.concatenate([begins, ends])
    steps = np.concatenate([np.ones(len(begins)), -np.ones(len(ends))])
    sizes = np.concatenate([lengths, -lengths]).astype("float64")
    order = np.lexsort((steps, times))  # at one time, ends (-1) before sends
    times, level, level_bytes = times[order], np.cumsum(steps[order]), np.cumsum(sizes[order])
    last = np.r_[times[1:] != times[:-1], True]  # the level after every change at a time
    build.counter(count, times[last], level[last])
    build.counter(pages, times[last], np.ceil(level_bytes[last] / PAGE_BYTES))
    return 2


def _add_dirty(build: _Builder, cap: Capture, host: str) -> int:
    """Counter tracks from balance_dirty_pages: global dirty and limit, per bdi wb_dirty."""
    if not cap.recorded("throttle"):
        return 0
    frame = cap.table("throttle")
    frame = frame[frame["host"] == host].sort_values("ts_ns", kind="stable")
    if frame.empty:
        return 0
    series = [("dirty + writeback pages (global, at throttling)", frame, "dirty"),
              ("dirty limit pages (global)", frame, "limit")]
    for bdi, group in frame.groupby("bdi", observed=True, sort=True):
        series.append((f"bdi {bdi} dirty + writeback pages (at throttling)", group, "wb_dirty"))
    made = 0
    for name, rows, column in series:
        values = rows[column]
        if values.isna().all():
            continue  # the kernel's tracepoint lacks the field (absent column)
        track = build.track(name=name, counter={})
        known = values.notna().to_numpy()
        build.counter(track, rows["ts_ns"].to_numpy(dtype=np.int64)[known],
                      values.to_numpy(dtype="float64", na_value=np.nan)[known])
        made += 1
    return made


def _packets(build: _Builder) -> Iterator[Any]:
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (  # noqa: PLC0415
        TracePacket,
        TrackEvent,
    )

    first = True
    for track in build.tracks:
        packet = TracePacket()
        packet.trusted_packet_sequence_id = SEQUENCE
        if first:
            packet.sequence_flags = TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
            first = False
        descriptor = packet.track_descriptor
        descriptor.uuid = track.uuid
        spec = dict(track.descriptor)
        if "parent" in spec:
            descriptor.parent_uuid = spec.pop("parent")
        if "name" in spec:
            descriptor.name = spec.pop("name")
        if "process" in spec:
            descriptor.process.pid = spec["process"]["pid"]
            descriptor.process.process_name = spec["process"]["process_name"]
        if "thread" in spec:
            thread = spec["thread"]
            descriptor.thread.pid, descriptor.thread.tid = thread["pid"], thread["tid"]
            descriptor.thread.thread_name = thread["thread_name"]
        if "counter" in spec:
            descriptor.counter.SetInParent()
        yield packet
    types = {_BEGIN: TrackEvent.TYPE_SLICE_BEGIN, _END: TrackEvent.TYPE_SLICE_END,
             _COUNTER: TrackEvent.TYPE_COUNTER}
    for ts, kind, track, source, row, value in build.events():
        packet = TracePacket()
        packet.trusted_packet_sequence_id = SEQUENCE
        packet.timestamp = ts
        track_event = packet.track_event
        track_event.track_uuid = track
        track_event.type = types[kind]
        if kind == _BEGIN:
            name, args = build.payloads[source](row)
            track_event.name = name
            _annotate(track_event, args)
        elif kind == _COUNTER:
            track_event.double_counter_value = value
        yield packet


def _annotate(track_event: Any, args: dict[str, Any]) -> None:
    for name, value in args.items():
        if value is None:
            continue
        annotation = track_event.debug_annotations.add()
        annotation.name = name
        if isinstance(value, bool):
            annotation.bool_value = value
        elif isinstance(value, int):
            annotation.int_value = value
        elif isinstance(value, float):
            annotation.double_value = value
        else:
            annotation.string_value = str(value)


def export_perfetto(cap: Capture, output: Path, host: str | None = None) -> ExportSummary:
    """Write ``cap`` (one host of it: ``host``, required when it holds several) as a Perfetto
    trace to ``output`` (see the module docstring); what was written."""
    require("perfetto")
    from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder  # noqa: PLC0415

    chosen = choose_host(cap, host)
    build = _Builder()
    tasks, wait_count = _add_waits(build, cap, chosen)
    request_count, counters = _add_requests(build, cap, chosen)
    counters += _add_dirty(build, cap, chosen)
    packets = 0
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            writer = StreamingTraceProtoBuilder(fh)
            for packet in _packets(build):
                writer.write_packet(packet)
                packets += 1
        tmp.replace(output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FusewbError(f"cannot write {output}: {exc.strerror}",
                          "choose a writable -o file") from None
    return ExportSummary(output, chosen, tasks, wait_count, request_count, counters, packets)


@dataclass
class TraceContents:
    """A Perfetto trace read back: ``tracks`` (uuid -> dict of name, parent, pid, tid,
    thread_name, process_name, counter), ``slices`` (track, ts, dur, name, args) and
    ``counters`` (track, ts, value), as DataFrames."""

    tracks: dict[int, dict[str, Any]]
    slices: pd.DataFrame
    counters: pd.DataFrame


def _annotation_value(annotation: Any) -> Any:
    kind = annotation.WhichOneof("value")
    return getattr(annotation, kind) if kind else None


def read_trace(path: Path) -> TraceContents:
    """Read a trace written by :func:`export_perfetto` (slices paired per track, in order)."""
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (  # noqa: PLC0415
        Trace,
        TrackEvent,
    )

    trace = Trace()
    trace.ParseFromString(Path(path).read_bytes())
    tracks: dict[int, dict[str, Any]] = {}
    open_slices: dict[int, list[tuple[int, str, dict[str, Any]]]] = {}
    slices, counters = [], []
    for packet in trace.packet:
        if packet.HasField("track_descriptor"):
            d = packet.track_descriptor
            tracks[d.uuid] = {
                "name": d.name or None, "parent": d.parent_uuid or None,
                "pid": d.thread.pid or d.process.pid or None, "tid": d.thread.tid or None,
                "thread_name": d.thread.thread_name or None,
                "process_name": d.process.process_name or None,
                "counter": d.HasField("counter"),
            }
        elif packet.HasField("track_event"):
            event = packet.track_event
            if event.type == TrackEvent.TYPE_SLICE_BEGIN:
                args = {a.name: _annotation_value(a) for a in event.debug_annotations}
                open_slices.setdefault(event.track_uuid, []).append(
                    (packet.timestamp, event.name, args))
            elif event.type == TrackEvent.TYPE_SLICE_END:
                begin, name, args = open_slices[event.track_uuid].pop()
                slices.append((event.track_uuid, begin, packet.timestamp - begin, name, args))
            elif event.type == TrackEvent.TYPE_COUNTER:
                counters.append((event.track_uuid, packet.timestamp, event.double_counter_value))
    return TraceContents(
        tracks,
        pd.DataFrame(slices, columns=["track", "ts", "dur", "name", "args"]),
        pd.DataFrame(counters, columns=["track", "ts", "value"]),
    )

