"""Reading the BPF program's in-kernel state from user space: lost-event and aggregate
counters, the FUSE server threads, and the waits and requests still pending (``ongoing`` at
stop). Maps exist only when the plan compiled their probe set in; absent maps read as empty."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fusewb.contract import histogram
from fusewb.contract.histogram import Histogram
from fusewb.contract.meta import missed_counters
from fusewb.contract.schema import FUSE_OPCODES
from fusewb.tracers.events import cstr, header_defs
from fusewb.tracers.plan import KPROBE_FUNCTIONS

__all__ = ["has_map", "lost_events", "counter", "counters", "missed_runs", "histograms", "server_threads", "pending_waits",
           "pending_requests", "VMSTAT_KEYS", "VMSTAT_MAX_SAMPLES", "vmstat_sample", "add_vmstat_sample"]

# /proc/vmstat page counts sampled over a capture (meta.json "vmstat"): nr_writeback_temp counts
# FUSE's temp pages (kernels before 6.16 only; absent from vmstat after).
VMSTAT_KEYS = ("nr_dirty", "nr_writeback", "nr_writeback_temp")
VMSTAT_MAX_SAMPLES = 3600  # beyond it every second sample is dropped (half the resolution)


def has_map(bpf: Any, name: str) -> bool:
    """Whether the compiled program has this map."""
    try:
        bpf.get_table(name.encode())
    except KeyError:
        return False
    return True


def _per_cpu(bpf: Any, table: str, index: int) -> list[int]:
    bpf_table = bpf[table.encode()]
    return [int(v) for v in bpf_table.getvalue(bpf_table.Key(index))]


def lost_events(bpf: Any) -> dict[str, Any]:
    """Events the ring buffer could not take: total, per CPU, by kind (meta.json lost_events),
    counted at the index of the kind's ``EV_*`` id."""
    kinds = header_defs().names("EV_")
    per_kind = {name: _per_cpu(bpf, "lost", index) for index, name in kinds.items()}
    ncpu = max((len(v) for v in per_kind.values()), default=0)
    per_cpu = [sum(v[cpu] for v in per_kind.values()) for cpu in range(ncpu)]
    return {"total": sum(per_cpu), "per_cpu": per_cpu,
            "by_kind": {name: sum(v) for name, v in per_kind.items()}}


def counter(bpf: Any, name: str) -> int:
    """One in-kernel counter (``CNT_<NAME>``), summed over the CPUs."""
    index = {n: i for i, n in header_defs().names("CNT_").items()}[name]
    return sum(_per_cpu(bpf, "counters", index))


def counters(bpf: Any) -> dict[str, int]:
    """The in-kernel aggregates, named as documented in ``fusewb.tracers``."""
    out = {name: sum(_per_cpu(bpf, "counters", index))
           for index, name in header_defs().names("CNT_").items()}
    if has_map(bpf, "writes_inflight"):
        for key, value in bpf[b"writes_inflight"].items():
            out[f"inflight_writes.{key.value}"] = int(value.now)
            out[f"inflight_writes_max.{key.value}"] = int(value.max)
    out.update(missed_counters(missed_runs(bpf)))
    if has_map(bpf, "fn_stats"):
        table = bpf[b"fn_stats"]
        for index, fn in enumerate(KPROBE_FUNCTIONS):
            value = table[table.Key(index)]
            if value.count:
                for stat in ("count", "total_ns", "max_ns"):
                    out[f"kprobe.{fn}.{stat}"] = int(getattr(value, stat))
    return out


def missed_runs(bpf: Any) -> dict[str, int]:
    """Per loaded program, the runs the kernel skipped because a BPF program was already running
    on that CPU (its recursion guard; seen in a loaded 7.3 guest, whose probes can be preempted;
    ``recursion_misses`` of ``/proc/self/fdinfo``, 5.12+). Empty where the kernel does not
    count them."""
    out: dict[str, int] = {}
    for name, function in bpf.funcs.items():
        try:
            info = Path(f"/proc/self/fdinfo/{function.fd}").read_text()
        except OSError:
            continue
        found = re.search(r"^recursion_misses:\s*(\d+)", info, re.M)
        if found:
            out[name.decode() if isinstance(name, bytes) else name] = int(found[1])
    return out


def _merged(bpf: Any, table: str,
            group: Callable[[Any], tuple]) -> dict[tuple, tuple[Histogram, dict[str, int]]]:
    """The entries of a histogram map (per CPU, one bucket each) merged by ``group(key)``: the
    histogram, and the sums of errors and bytes."""
    out: dict[tuple, tuple[Histogram, dict[str, int]]] = {}
    if not has_map(bpf, table):
        return out
    for key, per_cpu in bpf[table.encode()].items():
        count = sum(int(v.count) for v in per_cpu)
        if not count:
            continue
        hist, sums = out.setdefault(group(key), (Histogram(), {"errors": 0, "bytes": 0}))
        hist += Histogram(count, sum(int(v.total_ns) for v in per_cpu),
                          max(int(v.max_ns) for v in per_cpu), {int(key.bucket): count})
        sums["errors"] += sum(int(v.errors) for v in per_cpu)
        sums["bytes"] += sum(int(v.bytes) for v in per_cpu)
    return out


def histograms(bpf: Any, bdi_of: Callable[[int], str | None]) -> dict[str, Any]:
    """The in-kernel latency histograms (meta.json ``histograms``): every ended request per
    connection and opcode, every ended wait per bdi and kernel stack."""
    requests = [
        {"connection": connection, "bdi": bdi_of(connection), "opcode": opcode,
         "opcode_name": FUSE_OPCODES.get(opcode, f"OP{opcode}"), **sums, **hist.to_meta()}
        for (connection, opcode), (hist, sums) in sorted(
            _merged(bpf, "request_hist", lambda k: (int(k.connection), int(k.opcode))).items())
    ]
    waits = [
        {"bdi": bdi, "stack_id": stack_id, **hist.to_meta()}
        for (bdi, stack_id), (hist, _sums) in sorted(
            _merged(bpf, "wait_hist", lambda k: (cstr(k.bdi), int(k.stack_id))).items())
    ]
    return {"sub_bits": histogram.SUB_BITS, "max_msb": histogram.MAX_MSB,
            "requests": requests, "waits": waits}


def _cached_replies(bpf: Any) -> dict[tuple[int, int], int]:
    """(connection, tgid) -> replies still in the BPF side's per-CPU server_cache."""
    out: dict[tuple[int, int], int] = {}
    if has_map(bpf, "server_cache"):
        table = bpf[b"server_cache"]
        for cache in table.getvalue(table.Key(0)):
            if cache.replies:
                key = (int(cache.connection), int(cache.tgid))
                out[key] = out.get(key, 0) + int(cache.replies)
    return out


def server_threads(bpf: Any, bdi_of: Callable[[int], str | None]) -> list[dict[str, Any]]:
    """Processes that answered FUSE requests, per connection (meta.json server_threads): the
    FUSE servers, each with the first of its threads seen."""
    if not has_map(bpf, "server_threads"):
        return []
    cached = _cached_replies(bpf)
    table = bpf[b"server_threads"]
    try:  # one system call per batch: a server that churns threads fills thousands of entries
        entries = list(table.items_lookup_batch())
    except Exception:  # noqa: BLE001 - bcc raises bare Exception where batch lookups are missing
        entries = list(table.items())
    return sorted(
        (
            {"connection": k.connection, "bdi": bdi_of(k.connection), "tgid": k.tgid,
             "pid": v.pid, "comm": cstr(v.comm),
             "replies": int(v.replies) + cached.get((int(k.connection), int(k.tgid)), 0)}
            for k, v in entries
        ),
        key=lambda s: (s["connection"], s["tgid"], s["pid"]),
    )


def pending_waits(bpf: Any) -> Iterator[tuple[int, Any]]:
    """(thread id, wait_pending) of the waits asleep right now."""
    if has_map(bpf, "wait_pending"):
        for key, wait in bpf[b"wait_pending"].items():
            if wait.asleep:
                yield key.value, wait


def pending_requests(bpf: Any) -> Iterator[Any]:
    """The request_pending entries of the FUSE requests not answered yet (slots and hash)."""
    if has_map(bpf, "request_slots"):
        yield from (slot for slot in bpf[b"request_slots"].values() if slot.owner)
    if has_map(bpf, "requests_pending"):
        yield from bpf[b"requests_pending"].values()


def vmstat_sample(path: Path = Path("/proc/vmstat")) -> dict[str, int]:
    """The :data:`VMSTAT_KEYS` this kernel has, in pages."""
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name in VMSTAT_KEYS:
                out[name] = int(value)
    except (OSError, ValueError):
        return {}
    return out


def add_vmstat_sample(series: dict[str, list[int | None]], ts_ns: int, sample: dict[str, int]) -> None:
    """Append one sample to the columnar series (``ts_ns`` and each key; None where absent),
    halving the resolution when it outgrows :data:`VMSTAT_MAX_SAMPLES`."""
    series.setdefault("ts_ns", []).append(ts_ns)
    for key in VMSTAT_KEYS:
        series.setdefault(key, []).append(sample.get(key))
    if len(series["ts_ns"]) > VMSTAT_MAX_SAMPLES:
        for key in list(series):
            series[key] = series[key][::2]
