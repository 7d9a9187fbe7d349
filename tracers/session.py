"""A tracing session: choose the plan, load and attach, keep the FUSE filter current, stream
events into a capture, and stop cleanly (ongoing waits and requests recorded, everything
detached) whatever ends it: ``--duration``, a signal, a caller's stop, or an error.

A capture write that fails (file system full, I/O error, directory removed) ends the session:
everything is detached, the parts already written stay, ``meta.json`` is left saying
``complete: false``, and :class:`fusewb.tracers.capture.CaptureWriteError` says so in one line.
A traced mount that is unmounted, or whose server dies or stops, does not end it.

Before the capture's file system is full (less than the writer's reserve left, see
:mod:`fusewb.tracers.capture`) the session stops by itself and closes the capture whole
(``complete: true``, ``stopped_early`` in ``meta.json`` saying why); :class:`CaptureSpaceError`
then says so in one line. ``max_size`` bounds the capture instead: the oldest parts are dropped.

Python API (``fusewb run`` and tests)::

    tracer = Tracer(TraceOptions(output=Path("cap"), mounts=["/mnt/f"]))
    tracer.start_background()    # returns once every probe is attached, then traces in a thread
    ...                          # run the load
    summary = tracer.stop()      # flush, record ongoing work, detach (idempotent)

or ``tracer.start()`` then ``tracer.run(stop_event)`` to trace in the calling thread until
``stop_event`` is set or the duration elapses. Both return a
:class:`fusewb.tracers.live.CaptureSummary`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusewb.contract import defaults
from fusewb.contract.errors import FusewbError
from fusewb.contract.meta import initial_meta
from fusewb.contract.worker import Worker
from fusewb.tracers import kernel_state
from fusewb.tracers.capture import CaptureWriteError, CaptureWriter
from fusewb.tracers.events import decode
from fusewb.tracers.live import WAIT_HEADER, CaptureSummary, wait_line
from fusewb.tracers.mounts import FuseMount, MountTableWatch, fuse_mounts, mount_for_path
from fusewb.tracers.plan import ProbePlan, choose_plan
from fusewb.tracers.program import BuildOptions
from fusewb.tracers.procscan import blocked_in
from fusewb.tracers.rows import drop_tracing_frames, event_row, pending_request_row, pending_wait_row
from fusewb.contract.units import format_size

__all__ = ["TraceOptions", "Tracer", "CaptureSpaceError", "monotonic_ns"]

STATUS_EVERY_S = 0.5
# The BPF side submits without wake-ups (BPF_RB_NO_WAKEUP): the ring is drained in batches
# every POLL_S, which bounds the tracer's own CPU cost at high event rates.
POLL_S = 0.1


def monotonic_ns() -> int:
    """The clock of ``bpf_ktime_get_ns``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _discard(_line: str) -> None:
    return None


class CaptureSpaceError(FusewbError):
    """Tracing stopped before the capture's file system was full; the capture is whole."""


@dataclass
class TraceOptions:
    """What to trace and where to write it: ``fusewb trace``'s options (tracers/cli.py builds
    one from its command line, also for ``--ebpf``); :meth:`build_options` gives what of it the
    BPF program is compiled with."""

    output: Path | None  # the capture directory; None only to print the program (--ebpf)
    mounts: list[str] | None = None  # mountpoints to trace; None: every FUSE mount
    pid: int | None = None  # only this process's waits and throttling
    duration: float | None = None  # seconds; None: until stopped
    threshold_ms: float = defaults.THRESHOLD_MS  # live view; requests and waits this long become rows
    all_requests: bool = False  # every request a row, not only those of threshold_ms or more
    ring_pages: int = defaults.RING_PAGES
    plan: str | None = None  # force "tracepoint" or "kprobe"
    flush_interval: float = 1.0
    max_size: int | None = None  # bytes on disk; the oldest parts are dropped beyond it
    live: Callable[[str], None] = _discard  # one line per wait over the threshold
    progress: Callable[[str], None] = _discard  # messages while tracing (stderr in the CLI)
    status: Callable[[str], None] = _discard  # the status line, every STATUS_EVERY_S

    def build_options(self) -> BuildOptions:
        """The compile-time options these trace options ask for."""
        threshold_ns = int(self.threshold_ms * 1e6)
        return BuildOptions(ring_pages=self.ring_pages, filter_tgid=self.pid or 0,
                            row_request_ns=0 if self.all_requests else threshold_ns,
                            row_wait_ns=threshold_ns)

    def row_thresholds_ms(self) -> dict[str, float]:
        """From how long a request and a wait became rows (meta.json ``row_threshold_ms``)."""
        return {"requests": 0.0 if self.all_requests else float(self.threshold_ms),
                "waits": float(self.threshold_ms)}


class Tracer:
    """One tracing session (see the module docstring)."""

    def __init__(self, options: TraceOptions) -> None:
        self.options = options
        self.bpf: Any = None
        self.plan: ProbePlan | None = None
        self.capture: CaptureWriter | None = None
        self.probes: list[str] = []
        self.absent_columns: dict[str, list[str]] = {}  # table -> columns: the plan's
        self.mounts_seen: dict[tuple[str, str], FuseMount] = {}  # (bdi, mountpoint) -> mount
        self.bdi_by_connection: dict[int, str] = {}  # the latest mount of a connection wins
        self.mount_records: list[dict[str, Any]] = []  # as_dict() when first seen, for meta.json
        self.vmstat: dict[str, list[int | None]] = {}  # meta.json "vmstat", sampled at each flush
        self.mountpoints_now: set[str] = set()  # selected at the last change of the mount table
        self.stacks_written: set[int] = set()
        self.frames_cache: dict[int, list[str]] = {}
        self.reported_ongoing: set[tuple[int, int]] = set()
        self.max_wait_ms = 0.0
        self.start_ns = 0
        self.events_seen = 0
        self.waits_seen = 0
        self.waits_over = 0  # over the threshold (finished or reported ongoing)
        self.rows_seen: dict[str, int] = {}  # events per table, waits aside (waits_seen)
        self.stopped_early: str | None = None
        self.event_errors = 0
        self.first_event_error: str | None = None
        self._stop = threading.Event()
        self._worker: Worker | None = None
        self._summary: CaptureSummary | None = None
        self._finished = False

    # ---- set-up -------------------------------------------------------------------------
    def _selected_mounts(self) -> list[FuseMount]:
        if self.options.mounts is None:
            return fuse_mounts()
        selected = []
        for path in self.options.mounts:
            mount = mount_for_path(path)
            if mount is not None:
                selected.append(mount)
        return selected

    def _validate(self) -> None:
        if self.options.output is None:
            raise FusewbError("no capture directory given", "pass -o CAPTURE_DIR")
        if os.geteuid() != 0:
            raise FusewbError("fusewb trace needs root (BPF, tracefs)", "run it with sudo")
        for path in self.options.mounts or []:
            if mount_for_path(path) is None:
                raise FusewbError(f"{path} is not a FUSE mount", "give the mountpoint of a FUSE "
                                  "filesystem (list them with 'fusewb doctor')")

    def _features(self) -> Any:
        from fusewb.tracers.features import probe_features, tracefs_root  # noqa: PLC0415

        if tracefs_root() is None:
            raise FusewbError("tracefs is not mounted and could not be mounted",
                              "mount -t tracefs nodev /sys/kernel/tracing")
        return probe_features(test_loads=False)

    def start(self) -> None:
        """Load, attach, open the capture; returns once tracing is live. On any failure
        everything attached is detached again and nothing of the capture is left."""
        from fusewb.tracers.program import (  # noqa: PLC0415
            attach_kprobes,
            compile_program,
            release_compile_memory,
        )

        self._validate()
        CaptureWriter.check_new(self.options.output)  # before the slow compile
        self.plan = choose_plan(self._features(), self.options.plan)
        self.absent_columns = self.plan.absent_columns
        build = self.options.build_options()
        build.defines()  # validates before the slow compile
        self.bpf = compile_program(self.plan, build)
        try:
            self.probes = [p for p in self.plan.probes() if not p.startswith(("kprobe:", "kretprobe:"))]
            self.probes += attach_kprobes(self.bpf, self.plan)
            self._refresh_filter()
            self.bpf[b"events"].open_ring_buffer(self._on_event)
            self.start_ns = monotonic_ns()
            self.capture = CaptureWriter(self.options.output, self._initial_meta(time.time_ns()),
                                         max_size=self.options.max_size)
        except BaseException:
            self.bpf.cleanup()
            self.bpf = None
            raise
        release_compile_memory()
        self.options.live(WAIT_HEADER)

    def _initial_meta(self, start_epoch_ns: int) -> dict[str, Any]:
        assert self.plan is not None
        return initial_meta(
            host=socket.gethostname(),
            kernel_release=platform.release(),
            plan=self.plan.name,
            probes=self.probes,
            absent_columns=self.absent_columns,
            mounts=self.mount_records,
            filter={"mounts": self.options.mounts, "pid": self.options.pid},
            threshold_ms=self.options.threshold_ms,
            row_threshold_ms=self.options.row_thresholds_ms(),
            start_monotonic_ns=self.start_ns,
            start_epoch_ns=start_epoch_ns,
            ring_pages=self.options.ring_pages,
        )

    def _refresh_filter(self) -> set[str]:
        """Put the selected FUSE mounts' bdis and connections in the in-kernel filter; the
        mountpoints selected now."""
        bdis, conns = self.bpf[b"fuse_bdis"], self.bpf[b"fuse_conns"]
        selected = self._selected_mounts()
        generation = self.bpf[b"filter_generation"]  # the BPF side's cached connections expire
        generation[generation.Key(0)] = generation.Leaf(generation[generation.Key(0)].value + 1)
        for mount in selected:
            if (mount.bdi, mount.mountpoint) in self.mounts_seen:
                continue
            self.mounts_seen[(mount.bdi, mount.mountpoint)] = mount
            self.bdi_by_connection[mount.connection] = mount.bdi
            self.mount_records.append(mount.as_dict())
            key = bdis.Key()
            name = mount.bdi.encode()[: ctypes.sizeof(key) - 1]
            ctypes.memmove(ctypes.addressof(key), name, len(name))
            bdis[key] = bdis.Leaf(1)
            conns[conns.Key(mount.connection)] = conns.Leaf(1)
        return {mount.mountpoint for mount in selected}

    # ---- events -------------------------------------------------------------------------
    def _frames(self, stack_id: int) -> list[str]:
        if stack_id < 0:
            return []
        if stack_id not in self.frames_cache:
            try:
                addresses = list(self.bpf[b"stacks"].walk(stack_id))
            except KeyError:
                addresses = []
            self.frames_cache[stack_id] = drop_tracing_frames(
                [self.bpf.ksym(a, show_offset=False).decode(errors="replace") for a in addresses]
            )
        return self.frames_cache[stack_id]

    def _add_stack(self, stack_id: int) -> list[str]:
        frames = self._frames(stack_id)
        if stack_id >= 0 and stack_id not in self.stacks_written and frames:
            self.stacks_written.add(stack_id)
            self.capture.add("stacks", {"stack_id": stack_id, "frames": frames})
        return frames

    def _add(self, table: str, row: dict[str, Any]) -> None:
        """Add a row to a table; the columns this kernel cannot fill (``absent_columns``) are null."""
        for column in self.absent_columns.get(table, ()):
            row[column] = None
        self.capture.add(table, row)

    def _add_wait(self, row: dict[str, Any]) -> None:
        frames = self._add_stack(row["stack_id"])
        self._add("waits", row)
        self.waits_seen += 1
        ms = row["duration_ns"] / 1e6
        self.max_wait_ms = max(self.max_wait_ms, ms)
        if ms >= self.options.threshold_ms and (row["pid"], row["ts_ns"]) not in self.reported_ongoing:
            self.waits_over += 1
            self.options.live(wait_line(row, frames))

    def _bdi_of(self, connection: int) -> str | None:
        return self.bdi_by_connection.get(connection)  # once per request event: a dict lookup

    def _on_event(self, ctx: Any, data: int, size: int) -> int:
        """Ring buffer callback: never raise into bcc's C caller; problems are counted and the
        first one is kept for meta.json (``user_event_errors``, ``first_event_error``)."""
        try:
            self._handle_event(data, size)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the capture
            self.event_errors += 1
            if self.first_event_error is None:
                self.first_event_error = f"{type(exc).__name__}: {exc}"
        return 0

    def _handle_event(self, data: int, size: int) -> None:
        decoded = decode(data, size)
        if decoded is None:
            self.event_errors += 1
            return
        kind, event = decoded
        self.events_seen += 1
        row = event_row(kind, event, self._bdi_of)
        if kind.table == "waits":  # waits also feed the live view and the stacks table
            self._add_wait(row)
        else:
            self.rows_seen[kind.table] = self.rows_seen.get(kind.table, 0) + 1
            self._add(kind.table, row)

    def _report_ongoing(self) -> None:
        """Live lines for waits still asleep past the threshold (a stalled server never ends them)."""
        now = monotonic_ns()
        for pid, w in kernel_state.pending_waits(self.bpf):
            ident = (pid, w.ts_ns)
            if ident in self.reported_ongoing:
                continue
            row = pending_wait_row(pid, w, now, self._source())
            if row["duration_ns"] / 1e6 >= self.options.threshold_ms:
                self.reported_ongoing.add(ident)
                self.waits_over += 1
                self.options.live(wait_line(row, self._frames(w.stack_id)))

    def _source(self) -> str:
        return "kretprobe" if self.plan and self.plan.name == "kprobe" else "sched_switch"

    def _histograms(self) -> dict[str, Any]:
        """The in-kernel histograms now, their waits' stacks added to the stacks table."""
        histograms = kernel_state.histograms(self.bpf, self._bdi_of)
        for entry in histograms["waits"]:
            self._add_stack(entry["stack_id"])
        return histograms

    def _flush(self) -> None:
        self._refresh_filter()
        self._report_ongoing()
        kernel_state.add_vmstat_sample(self.vmstat, monotonic_ns(), kernel_state.vmstat_sample())
        histograms = self._histograms()
        self.capture.flush(
            vmstat=self.vmstat,
            mounts=self.mount_records,
            lost_events=kernel_state.lost_events(self.bpf),
            server_threads=kernel_state.server_threads(self.bpf, self._bdi_of),
            histograms=histograms,
        )

    # ---- running ------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> CaptureSummary:
        """Trace until ``stop`` is set or the duration elapses, then finish; start() if needed.

        A capture write that fails (file system full, I/O error, directory removed) ends
        tracing: everything is detached, what was written is kept, and CaptureWriteError
        raised with what happened."""
        stop = stop or self._stop
        try:
            if self.bpf is None:
                self.start()
            with contextlib.suppress(CaptureWriteError):  # raised below, once finished
                self._trace(stop)
        finally:
            summary = self._finish()
        if self.capture is not None and self.capture.failure is not None:
            raise self.capture.failure_error()
        if self.stopped_early is not None:
            raise CaptureSpaceError(
                f"{self.stopped_early}: tracing stopped before it was full, capture "
                f"{self.options.output} kept whole ({sum(self.capture.parts.values())} parts, "
                "meta.json complete=true)",
                "free space there, trace into another -o directory, or bound the capture "
                "with --max-size")
        return summary

    def _trace(self, stop: threading.Event) -> None:
        with MountTableWatch() as mount_watch:  # re-read mounts only when they changed
            began = time.monotonic()
            next_flush = began + self.options.flush_interval
            next_status = began + STATUS_EVERY_S
            while not stop.is_set():
                now = time.monotonic()
                if self.options.duration is not None and now - began >= self.options.duration:
                    break
                if stop.wait(POLL_S):
                    break
                self.bpf.ring_buffer_consume()
                if mount_watch.changed():  # new mounts join the filter within a poll interval
                    self._note_unmounted(self._refresh_filter())
                now = time.monotonic()
                if now >= next_flush:
                    self._flush()
                    next_flush = now + self.options.flush_interval
                    if self._space_ran_low():
                        break
                if now >= next_status:
                    self.options.status(self.status_text(now - began))
                    next_status = now + STATUS_EVERY_S

    def _space_ran_low(self) -> bool:
        """Whether the capture's file system is down to its reserve (noted in stopped_early)."""
        if not self.capture.low_on_space():
            return False
        left = self.capture.space_left() or 0
        self.stopped_early = (f"only {format_size(left)} left on the file system of capture "
                              f"{self.options.output} (reserve {format_size(self.capture.reserve)})")
        return True

    def _note_unmounted(self, mountpoints: set[str]) -> None:
        """One progress line per traced mount that went away; tracing goes on (a server
        restarted on the same mountpoint is traced again)."""
        for mountpoint in sorted(self.mountpoints_now - mountpoints):
            self.options.progress(f"{mountpoint} was unmounted; still tracing, it is traced "
                                  "again if mounted again")
        self.mountpoints_now = mountpoints

    def status_text(self, elapsed: float) -> str:
        """The status line: events, waits (over the threshold, max), requests, lost events,
        capture size and what --max-size dropped."""
        lost = kernel_state.lost_events(self.bpf)["total"]
        ended = kernel_state.counter(self.bpf, "req_ended")
        text = (f"[{elapsed:.0f}s] requests {ended} ({self.rows_seen.get('requests', 0)} rows), "
                f"waits {self.waits_seen} (over {self.options.threshold_ms:g} ms {self.waits_over}, "
                f"max {self.max_wait_ms:.1f} ms), events {self.events_seen}, lost {lost}, "
                f"capture {format_size(self.capture.size_on_disk())}")
        dropped = sum(self.capture.dropped["parts"].values())
        return text + (f" (dropped {dropped} oldest parts)" if dropped else "")

    def _finish(self) -> CaptureSummary:
        """Drain, record ongoing waits/requests and aggregates, write the last part, detach."""
        if self._finished:
            assert self._summary is not None
            return self._summary
        self._finished = True
        ongoing_waits = ongoing_requests = 0
        end_ns = monotonic_ns()
        lost: dict[str, Any] = {"total": 0, "per_cpu": [], "by_kind": {}}
        unseen: list[dict[str, Any]] = []
        counters: dict[str, int] = {}
        servers: list[dict[str, Any]] = []
        histograms: dict[str, Any] | None = None
        try:
            if self.bpf is not None:
                from fusewb.tracers.program import detach_probes  # noqa: PLC0415

                self.bpf.ring_buffer_consume()
                end_ns = monotonic_ns()
                detach_probes(self.bpf)  # the state below holds still: nothing counted twice
                self.bpf.ring_buffer_consume()
                tracked: set[int] = set()
                for pid, w in kernel_state.pending_waits(self.bpf):
                    self._add_wait(pending_wait_row(pid, w, end_ns, self._source()))
                    tracked.add(pid)
                    ongoing_waits += 1
                unseen = [t for t in blocked_in("folio_wait_writeback") if t["pid"] not in tracked]
                for r in kernel_state.pending_requests(self.bpf):
                    row = pending_request_row(r, end_ns, self._bdi_of(r.connection))
                    self._add("requests", row)
                    ongoing_requests += 1
                lost = kernel_state.lost_events(self.bpf)
                histograms = self._histograms()
                counters = {**kernel_state.counters(self.bpf), "user_event_errors": self.event_errors}
                servers = kernel_state.server_threads(self.bpf, self._bdi_of)
        finally:
            if self.bpf is not None:
                self.bpf.cleanup()
                self.bpf = None
            if self.capture is not None:
                self.capture.close(
                    end_monotonic_ns=end_ns,
                    mounts=self.mount_records,
                    lost_events=lost,
                    counters=counters,
                    server_threads=servers,
                    unseen_waiters=unseen,
                    **({"histograms": histograms} if histograms is not None else {}),
                    first_event_error=self.first_event_error,
                    stopped_early=self.stopped_early,
                )
        self._summary = CaptureSummary(
            directory=self.options.output,
            plan=self.plan.name if self.plan else "none",
            probes=self.probes,
            tables=self.capture.kept_rows() if self.capture else {},
            dropped=dict(self.capture.dropped) if self.capture else {},
            lost=lost,
            counters=counters,
            ongoing_waits=ongoing_waits,
            ongoing_requests=ongoing_requests,
            max_wait_ms=self.max_wait_ms,
            seconds=(end_ns - self.start_ns) / 1e9 if self.start_ns else 0.0,
            server_threads=servers,
            unseen_waiters=unseen,
        )
        return self._summary

    def start_background(self) -> None:
        """start() here (so attach errors raise here), then trace in a thread until stop()."""
        self.start()
        self._worker = Worker(lambda: self.run(self._stop), "fusewb-trace")

    def stop(self, timeout: float = 300.0) -> CaptureSummary:
        """End the session (background or not) and return its summary. A background session's
        thread does the last drain and write itself; this waits up to ``timeout`` seconds for
        it (a slow machine's last part) and never finishes the capture beside it."""
        self._stop.set()
        if self._worker is not None:
            if not self._worker.join(timeout):
                raise FusewbError(f"the tracing thread did not finish its capture within {timeout:.0f} s",
                                  "the capture's parts written so far are kept; see the log for what it was doing")
            self._worker.result()  # its error, if tracing failed
        return self._finish()
