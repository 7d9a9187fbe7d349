"""Part 6, FUSE requests at a high rate: what tracing them costs a real C server, fusewb
against a bpftrace histogram script.

Server and load: Debian's bindfs (C, libfuse 2, one thread as Debian runs it) over a private
tmpfs, no writeback cache. ``LOAD_PROCESSES`` processes (``bench/pwrite_load.c``, compiled with
gcc at bench time) pwrite(2) 4 KiB blocks as fast as they can, each into a file of its own.
Every pwrite is two FUSE requests: the WRITE, and the GETXATTR of ``security.capability`` the
kernel sends before each write (file_remove_privs; bindfs answers "no such attribute", so the
kernel asks again at the next write). *requests/s* is the load's own count of pwrite calls
times 2; the tracers' kernel-side counts check the 2 (rows *requests per pwrite*).

Variants, each repetition running every one once in an order rotated per repetition:
untraced; ``fusewb trace --mount MNT`` (every request filed in in-kernel histograms, a row only
for those of 50 ms or more); ``fusewb trace --mount MNT --all-requests`` (every request also a
row); ``bpftrace bench/fuse_requests.bt CONN`` (send joined with end on (connection, unique)
into a ``hist()`` per opcode, this connection only). Each tracer is started and confirmed
attached, then an unmeasured warm-up load and a pause past the tracer's first flush, then the
measured load. *tracer process CPU* is user+system time of the tracer's process during the
measured load; the BPF programs run in the tasks that send and end requests, so their cost
shows in the throughput and, separately, in the profile pass: the same runs again with
``kernel.bpf_stats_enabled=1`` (restored afterwards), giving runs/s and ns per run of each BPF
program of each tracer (``bpftool prog show``: run_cnt, run_time_ns).

Case "1% slow": bindfs cannot be made slow, so the slow requests are made behind it. The
backing folder holds a mount of fusewb's fixture (pyfuse3, ``--latency-ms 60``, no writeback
cache) at ``slow/``; beside the same fast load, one more process of many threads pwrites files
under ``MNT/slow/``. Each such WRITE reaches bindfs, whose own pwrite into the fixture waits
60 ms: the bindfs connection sees a WRITE of about 62 ms (over fusewb's 50 ms threshold, so a
row) and a fast GETXATTR. A slow request holds a bindfs thread, so this case runs bindfs with
``--multithreaded`` (libfuse's thread pool, slower than the single thread on the fast path:
this case's untraced rate is lower than the first's), and the number of slow threads is
calibrated untraced at the start so that the slow WRITEs are 1% of the connection's requests
(measured in every run: rows *slow share*). The fixture's own requests are on another
connection: neither tracer files them, but both tracers' programs run for them (and count in
the profile's runs/s).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fusewb.contract import defaults
from fusewb.fixtures.faults import Faults
from fusewb.fixtures.manage import mount_fixture
from fusewb.tracers.mounts import FuseMount

from bench.peers import (
    FUSE_REQUESTS_BT, TracerProcess, bpf_run_deltas, bpf_run_stats, bpf_stats_enabled, bpftrace,
    fusewb_trace,
)
from bench.profile import PySpy, hot_functions
from bench.stats import PartResult, Row, Spread, fmt_number, interleaved, paired_ratios
from bench.system import Settings, require_tools
from bench.workloads import (
    LoadCount, PwriteLoad, bindfs_mount, compile_pwrite_load, finish_pwrite_loads, tmpfs_mount,
)

__all__ = ["run", "VARIANTS", "CASES", "Case", "Run", "measure", "mounted_cases", "with_slow_threads",
           "bpftrace_counts", "fusewb_counts"]

UNTRACED = "untraced"
FUSEWB = "fusewb trace"
FUSEWB_ALL = "fusewb trace --all-requests"
BPFTRACE = "bpftrace fuse_requests.bt"
VARIANTS = [UNTRACED, FUSEWB, FUSEWB_ALL, BPFTRACE]
TRACED = VARIANTS[1:]
FAST = "bindfs, 4 KiB pwrite"
SLOW = "bindfs --multithreaded, 1% slow"
CASES = [FAST, SLOW]

LOAD_PROCESSES = 6  # ~125k requests/s untraced on this 2-CPU VM (4: ~105k)
REQUESTS_PER_PWRITE = 2  # WRITE + GETXATTR security.capability
SLOW_SHARE = 0.01  # of the connection's requests
SLOW_MS = 1.2 * defaults.THRESHOLD_MS  # the fixture's latency: over the threshold, so rows
CALIBRATION_THREADS = 16
MAX_SLOW_THREADS = 60  # the fixture answers at most 64 requests at once (fixtures/server.py)
RUN_S = {"full": 6.0, "quick": 2.0}  # measured load
PROFILE_S = {"full": 4.0, "quick": 2.0}
PROFILE_REPETITIONS = {"full": 2, "quick": 1}
WARM_S = 1.0  # unmeasured load after attaching
SETTLE_S = 1.2  # then a pause: the tracer's first flush (1 s) happens before measuring
START_DELAY_NS = 100_000_000  # the loads of a run start together, this long after launch
HOT_FUNCTIONS = 12  # py-spy's busiest functions named in the notes (the first are the loop's)

THROUGHPUT_TARGET = 0.95
CPU_TARGET = 2.0  # % of one CPU at 125k requests/s
PROGRAM_TARGETS_NS = {"fuse_request_send": 250, "fuse_request_end": 250, "sched_switch": 100}


@dataclass
class Case:
    """A mount and the load run on it: the fast writers, and in the slow case the slow ones."""

    name: str
    mount: FuseMount
    fast: PwriteLoad
    slow: PwriteLoad | None = None

    def load(self, seconds: float) -> tuple[LoadCount, LoadCount | None]:
        """Every load of the case, started together; (fast, slow) counts."""
        loads = [self.fast, *([self.slow] if self.slow else [])]
        start_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + START_DELAY_NS
        counts = finish_pwrite_loads([load.start(seconds, start_at) for load in loads], seconds)
        return counts[0], (counts[1] if self.slow else None)


@dataclass
class Run:
    """One measured run of a case under a variant."""

    fast: LoadCount
    slow: LoadCount | None
    session_calls: tuple[int, int]  # (fast, slow) pwrite calls while the tracer ran
    tracer_cpu: float | None = None  # % of one CPU during the measured load
    kernel_requests: int | None = None  # the tracer's count of the connection's requests
    rows: int | None = None  # fusewb: request rows in the capture
    lost: int | None = None  # fusewb: lost events
    bpf: dict[str, tuple[int, int]] = field(default_factory=dict)  # profile: program -> (runs, ns)
    hot: list[str] = field(default_factory=list)  # profile: py-spy's busiest functions of fusewb

    @property
    def pwrite_rate(self) -> float:
        return self.fast.rate + (self.slow.rate if self.slow else 0.0)

    @property
    def requests_per_s(self) -> float:
        return REQUESTS_PER_PWRITE * self.pwrite_rate

    @property
    def slow_share(self) -> float:
        """Slow WRITEs among the connection's requests (each pwrite is two requests)."""
        return (self.slow.rate / self.requests_per_s) if self.slow and self.requests_per_s else 0.0

    @property
    def requests_per_pwrite(self) -> float | None:
        calls = sum(self.session_calls)
        return self.kernel_requests / calls if self.kernel_requests is not None and calls else None

    @property
    def rows_per_request(self) -> float | None:
        """fusewb's request rows over its count of requests (1 when every request is a row)."""
        return self.rows / self.kernel_requests if self.rows is not None and self.kernel_requests else None

    @property
    def rows_per_slow_pwrite(self) -> float | None:
        """fusewb's request rows over the slow pwrite calls made while it traced."""
        return self.rows / self.session_calls[1] if self.rows is not None and self.session_calls[1] else None


def fusewb_counts(capture: Path, connection: int) -> tuple[int | None, int | None, int | None]:
    """(requests of ``connection`` in the in-kernel histograms, request rows, lost events) of a
    finished fusewb capture (None where meta.json lacks them)."""
    try:
        meta = json.loads((capture / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None, None, None
    hist = meta.get("histograms")
    requests = None if hist is None else sum(
        int(e.get("count", 0)) for e in hist.get("requests", []) if e.get("connection") == connection)
    rows = meta.get("tables", {}).get("requests")
    lost = (meta.get("lost_events") or {}).get("total")
    return requests, rows, lost


_HIST_MAP = re.compile(r"^@\w*\[(\d+)\]:")
_HIST_BUCKET = re.compile(r"^\[[^\]]*[\])]\s+(\d+)\s+\|")


def bpftrace_counts(stdout: str) -> dict[int, int]:
    """opcode -> requests filed in the ``hist()`` maps bpftrace printed at exit."""
    counts: dict[int, int] = {}
    opcode = None
    for line in stdout.splitlines():
        if match := _HIST_MAP.match(line):
            opcode = int(match.group(1))
        elif (match := _HIST_BUCKET.match(line)) and opcode is not None:
            counts[opcode] = counts.get(opcode, 0) + int(match.group(1))
    return counts


def _start(variant: str, case: Case, capture: Path) -> TracerProcess | None:
    mountpoint = case.mount.mountpoint
    if variant == FUSEWB:
        return fusewb_trace(mountpoint, capture)
    if variant == FUSEWB_ALL:
        return fusewb_trace(mountpoint, capture, "--all-requests")
    if variant == BPFTRACE:
        return bpftrace(str(case.mount.connection), FUSE_REQUESTS_BT)
    return None


def measure(case: Case, variant: str, capture: Path, seconds: float, profile: bool = False,
            spy: Path | None = None) -> Run:
    """Start ``variant``, warm up, measure one load of ``seconds``, stop; what it measured.
    ``profile``: also the BPF programs' runs and run time (kernel.bpf_stats_enabled must be
    1); ``spy``: py-spy the tracer meanwhile, its raw output there."""
    tracer = _start(variant, case, capture)
    try:
        warm_fast, warm_slow = case.load(WARM_S)
        time.sleep(SETTLE_S)
        before = bpf_run_stats(tracer.pid) if profile and tracer else {}
        sampler = PySpy(tracer.pid, seconds, spy) if spy and tracer else None
        cpu0, began = (tracer.cpu_seconds() if tracer else 0.0), time.monotonic()
        fast, slow = case.load(seconds)
        cpu = ((tracer.cpu_seconds() - cpu0) / (time.monotonic() - began) * 100
               if tracer else None)
        bpf = bpf_run_deltas(before, bpf_run_stats(tracer.pid)) if profile and tracer else {}
        if sampler is not None:
            sampler.finish()
        hot = hot_functions(spy, top=HOT_FUNCTIONS) if sampler and spy else []
    finally:
        if tracer is not None:
            tracer.stop()
    calls = (warm_fast.calls + fast.calls,
             (warm_slow.calls if warm_slow else 0) + (slow.calls if slow else 0))
    result = Run(fast, slow, calls, cpu, bpf=bpf, hot=hot)
    if variant in (FUSEWB, FUSEWB_ALL):
        result.kernel_requests, result.rows, result.lost = fusewb_counts(capture,
                                                                         case.mount.connection)
        shutil.rmtree(capture, ignore_errors=True)
    elif variant == BPFTRACE and tracer is not None:
        result.kernel_requests = sum(bpftrace_counts(tracer.stdout).values())
    return result


def _slow_threads(case: Case, seconds: float) -> tuple[int, str]:
    """Slow writer threads that make the slow WRITEs ``SLOW_SHARE`` of the requests, from an
    untraced run with ``CALIBRATION_THREADS``; (threads, what the run measured)."""
    probe = with_slow_threads(case, CALIBRATION_THREADS)
    probe.load(WARM_S)
    fast, slow = probe.load(seconds)
    assert slow is not None
    per_thread = slow.rate / CALIBRATION_THREADS
    # slow / (2 * (fast + slow)) = share  =>  slow = 2 * share * fast / (1 - 2 * share)
    wanted = 2 * SLOW_SHARE * fast.rate / (1 - 2 * SLOW_SHARE)
    threads = max(1, min(MAX_SLOW_THREADS, round(wanted / per_thread) if per_thread else 1))
    return threads, (f"calibration ({CALIBRATION_THREADS} slow threads, {seconds:g} s, "
                     f"untraced): {fmt_number(fast.rate)} fast pwrite/s, "
                     f"{fmt_number(slow.rate)} slow pwrite/s ({1000 / per_thread if per_thread else 0:.0f} "
                     f"ms each); wanted {fmt_number(wanted)} slow pwrite/s: {threads} threads"
                     + (" (capped)" if threads == MAX_SLOW_THREADS else ""))


@contextmanager
def mounted_cases(workdir: Path, binary: Path) -> Iterator[tuple[Case, Case]]:
    """The two cases' mounts under ``workdir``, for the duration of the block: (bindfs, the
    slow case: bindfs --multithreaded with the fixture behind slow/ and one slow writer thread;
    give it its calibrated threads with :func:`with_slow_threads`)."""
    with tmpfs_mount(workdir / "tmpfs", size_mib=1024) as tmpfs:
        backing = tmpfs / "backing"
        (backing / "slow").mkdir(parents=True)
        with mount_fixture(backing / "slow", Faults(latency_ms=SLOW_MS), writeback_cache=False), \
                bindfs_mount(backing, workdir / "mnt") as plain, \
                bindfs_mount(backing, workdir / "mnt-mt", "--multithreaded") as threaded:
            yield (Case(FAST, plain, PwriteLoad(binary, Path(plain.mountpoint) / "w", LOAD_PROCESSES)),
                   Case(SLOW, threaded,
                        PwriteLoad(binary, Path(threaded.mountpoint) / "w", LOAD_PROCESSES),
                        PwriteLoad(binary, Path(threaded.mountpoint) / "slow" / "s", 1)))


def with_slow_threads(case: Case, threads: int) -> Case:
    """``case`` with ``threads`` slow writer threads."""
    assert case.slow is not None
    return Case(case.name, case.mount, case.fast,
                PwriteLoad(case.slow.binary, case.slow.prefix, 1, threads))


def run(settings: Settings, progress: Callable[[str], None]) -> PartResult:
    """Interleaved runs of each variant on both cases, then the BPF profile pass."""
    require_tools("bindfs", "bpftrace", "bpftool", "gcc", "fusermount3")
    mode = "quick" if settings.quick else "full"
    result = PartResult("requests")
    binary = compile_pwrite_load(settings.scratch("requests-bin"))
    scratch = settings.scratch("requests-out")
    captures = (scratch / f"capture-{n}" for n in itertools.count())
    runs: dict[tuple[str, str], list[Run]] = {}
    profiles: dict[tuple[str, str], list[Run]] = {}
    with mounted_cases(settings.scratch("requests-mounts"), binary) as (fast_case, slow_case):
        progress("requests: calibrating the slow writers (untraced)")
        threads, calibration = _slow_threads(slow_case, RUN_S[mode])
        progress(f"requests: {calibration}")
        cases = [fast_case, with_slow_threads(slow_case, threads)]
        order = list(interleaved(VARIANTS, settings.repetitions))
        for case in cases:
            for done, (rep, variant) in enumerate(order, 1):
                progress(f"requests: {case.name}, repetition {rep + 1}/{settings.repetitions}, "
                         f"{variant} ({done}/{len(order)})")
                sample = measure(case, variant, next(captures), RUN_S[mode])
                runs.setdefault((case.name, variant), []).append(sample)
                progress(f"requests: {fmt_number(sample.requests_per_s)} requests/s"
                         + (f", tracer {sample.tracer_cpu:.1f}% of a CPU"
                            if sample.tracer_cpu is not None else ""))
        progress("requests: profile pass (kernel.bpf_stats_enabled)")
        with bpf_stats_enabled():
            for case in cases:
                for rep, variant in interleaved(TRACED, PROFILE_REPETITIONS[mode]):
                    progress(f"requests: profile, {case.name}, {variant}")
                    spy = scratch / "py-spy.txt" if variant == FUSEWB and rep == 0 else None
                    profiles.setdefault((case.name, variant), []).append(
                        measure(case, variant, next(captures), PROFILE_S[mode], profile=True,
                                spy=spy))
    for case in CASES:
        _rows(result, case, runs)
    for case in CASES:
        _profile_rows(result, case, profiles)
    result.notes += _notes(settings, runs, profiles, calibration)
    result.notes += _missed(result, runs)
    return result


def _rows(result: PartResult, case: str, runs: dict[tuple[str, str], list[Run]]) -> None:
    base = [r.requests_per_s for r in runs[(case, UNTRACED)]]
    ratios = {v: Spread.of(paired_ratios([r.requests_per_s for r in runs[(case, v)]], base))
              for v in TRACED}
    for variant in VARIANTS:
        row = Row(part="requests", case=f"{case}: requests/s", variant=variant,
                  unit="requests/s", value=Spread.of([r.requests_per_s for r in runs[(case, variant)]]))
        if variant != UNTRACED:
            row.ratio, row.ratio_to = ratios[variant], UNTRACED
        if variant == FUSEWB:
            row.target = f">= {THROUGHPUT_TARGET} and >= bpftrace's"
            row.met = (ratios[FUSEWB].median >= THROUGHPUT_TARGET
                       and ratios[FUSEWB].median >= ratios[BPFTRACE].median)
        result.rows.append(row)
    for variant in TRACED:
        values = [r.tracer_cpu for r in runs[(case, variant)] if r.tracer_cpu is not None]
        row = Row(part="requests", case=f"{case}: tracer process CPU", variant=variant,
                  unit="% of a CPU", value=Spread.of(values))
        if variant == FUSEWB:
            row.target = f"<= {CPU_TARGET:g}% at 125k requests/s"
            row.met = row.value.median <= CPU_TARGET
        result.rows.append(row)
    for variant in TRACED:
        counted = [r.requests_per_pwrite for r in runs[(case, variant)]
                   if r.requests_per_pwrite is not None]
        if counted:
            result.rows.append(Row(part="requests", case=f"{case}: requests per pwrite "
                                   "(tracer's count)", variant=variant, unit="requests",
                                   value=Spread.of(counted)))
    for variant, unit, per in ((FUSEWB_ALL, "rows per request", Run.rows_per_request),
                               (FUSEWB, "rows per slow pwrite", Run.rows_per_slow_pwrite)):
        values = [v for r in runs[(case, variant)] if (v := per.fget(r)) is not None]
        if values:
            result.rows.append(Row(part="requests", case=f"{case}: request rows", variant=variant,
                                   unit=unit, value=Spread.of(values)))
    if case == SLOW:
        for variant in VARIANTS:
            result.rows.append(Row(part="requests", case=f"{case}: slow share", variant=variant,
                                   unit="% of requests", value=Spread.of(
                                       [r.slow_share * 100 for r in runs[(case, variant)]])))


def _profile_rows(result: PartResult, case: str,
                  profiles: dict[tuple[str, str], list[Run]]) -> None:
    for variant in TRACED:
        samples = profiles.get((case, variant), [])
        programs = sorted({name for r in samples for name, (cnt, _) in r.bpf.items() if cnt})
        for name in programs:
            per_run = [ns / cnt for r in samples for cnt, ns in [r.bpf.get(name, (0, 0))] if cnt]
            row = Row(part="requests", case=f"{case}: ns per run, {name}", variant=variant,
                      unit="ns/run", value=Spread.of(per_run))
            if variant == FUSEWB and name in PROGRAM_TARGETS_NS:
                row.target = f"<= {PROGRAM_TARGETS_NS[name]} ns"
                row.met = row.value.median <= PROGRAM_TARGETS_NS[name]
            result.rows.append(row)
        if samples:
            result.rows.append(Row(
                part="requests", case=f"{case}: BPF programs (profile)", variant=variant,
                unit="% of a CPU", value=Spread.of(
                    [sum(ns for _, ns in r.bpf.values()) / 1e9 / r.fast.seconds * 100
                     for r in samples])))


def _program_text(sample: Run) -> str:
    seconds = sample.fast.seconds
    return ", ".join(f"{name} {fmt_number(cnt / seconds)} runs/s x {ns / cnt:.0f} ns"
                     for name, (cnt, ns) in sorted(sample.bpf.items(), key=lambda kv: -kv[1][1])
                     if cnt)


def _notes(settings: Settings, runs: dict[tuple[str, str], list[Run]],
           profiles: dict[tuple[str, str], list[Run]], calibration: str) -> list[str]:
    mode = "quick" if settings.quick else "full"
    notes = [
        f"Method: bindfs (`bindfs BACKING MNT`, one thread) over a private tmpfs, no writeback "
        f"cache; {LOAD_PROCESSES} processes of `bench/pwrite_load.c` (gcc -O2) pwrite 4 KiB "
        "blocks in turn over 1 MiB of a file of their own, as fast as they can. Each "
        "repetition runs every variant once per case, order rotated; a tracer is started and "
        f"confirmed attached, then an unmeasured {WARM_S:g} s load and a {SETTLE_S:g} s pause, "
        f"then the measured {RUN_S[mode]:g} s load, then it is stopped. requests/s = "
        f"{REQUESTS_PER_PWRITE} x the load's own count of pwrite calls per second (WRITE + "
        "GETXATTR security.capability each); *requests per pwrite* is the tracer's "
        "kernel-side count of the connection's requests (fusewb: its in-kernel histograms in "
        "meta.json; bpftrace: its hist() counts) over the pwrite calls made while it traced "
        "(warm-up included; the few LOOKUP/OPEN/FLUSH/RELEASE of each run's files add to it). "
        "Ratios are per-repetition requests/s over untraced requests/s of the same repetition.",
        "Peers: `fusewb trace --mount MNT -o CAPTURE` (default: every request in the in-kernel "
        f"histograms, rows only for requests of {defaults.THRESHOLD_MS:g} ms or more, plus its "
        "other probes: waits and sched_switch, throttling, reclaim); the same with "
        "`--all-requests` (every request also a ring-buffer row written to Parquet); `bpftrace "
        "bench/fuse_requests.bt CONN` (fuse:fuse_request_send and fuse:fuse_request_end "
        "joined on (connection, unique), hist() of ns per opcode, log2 buckets where fusewb "
        "keeps 8 sub-buckets per power of two).",
        f"1% slow: the backing folder holds the fixture (`--latency-ms {SLOW_MS:g}`, no "
        "writeback cache) at slow/; bindfs with `--multithreaded`; the fast load as above plus "
        "one process of N threads pwriting 4 KiB to files of their own under MNT/slow/ "
        f"(bindfs's WRITE waits for the fixture's {SLOW_MS:g} ms). N from an untraced "
        f"calibration run: {calibration}.",
    ]
    checks = []
    for case in CASES:
        for variant in (FUSEWB, FUSEWB_ALL):
            samples = runs.get((case, variant), [])
            if not samples:
                continue
            rows = [r.rows for r in samples if r.rows is not None]
            lost = [r.lost for r in samples if r.lost is not None]
            slow = [r.session_calls[1] for r in samples]
            checks.append(
                f"{case}, {variant}: request rows per run {_range(rows)}, lost events "
                f"{_range(lost)}" + (f", slow pwrite calls while tracing {_range(slow)}"
                                    if case == SLOW else ""))
    notes.append("What fusewb wrote (rows are the capture's requests table; default rows are "
                 "the requests over the threshold): " + "; ".join(checks) + ".")
    profile = [f"{case}, {variant}: {_program_text(r)}" for (case, variant), samples
               in profiles.items() for r in samples[:1]]
    notes.append(f"Profile pass (kernel.bpf_stats_enabled=1, {PROFILE_S[mode]:g} s load per "
                 f"run, {PROFILE_REPETITIONS[mode]} run(s) per variant; first run shown): "
                 + " | ".join(profile) + ". BPF statistics count program run time only, not "
                 "the tracepoint's own dispatch.")
    joined = [r.requests_per_pwrite for r in runs.get((FAST, BPFTRACE), [])
              if r.requests_per_pwrite is not None]
    if joined and Spread.of(joined).median < REQUESTS_PER_PWRITE / 2:
        notes.append("bpftrace's join matched few requests: this kernel sets a request's "
                     "unique after fuse:fuse_request_send fires (6.12-6.17), so its figures "
                     "measure a script that files almost nothing.")
    hot = [f"{case}: " + "; ".join(samples[0].hot) for (case, variant), samples in profiles.items()
           if variant == FUSEWB and samples and samples[0].hot]
    if hot:
        notes.append(f"Where {FUSEWB}'s process spends its CPU (py-spy during its first profile "
                     "run, inclusive share of busy samples): " + " | ".join(hot) + ".")
    return notes


def _range(values: list[int]) -> str:
    if not values:
        return "not available"
    return (f"{min(values):,}" if min(values) == max(values)
            else f"{min(values):,}-{max(values):,}")


def _missed(result: PartResult, runs: dict[tuple[str, str], list[Run]]) -> list[str]:
    """For each missed target: by how much, and the noise of the untraced runs beside it."""
    notes = []
    for row in result.rows:
        if row.met is not False:
            continue
        case = row.case.split(":", 1)[0]
        base = Spread.of([r.requests_per_s for r in runs[(case, UNTRACED)]])
        noise = (f"the untraced runs spread {fmt_number(base.low)}-{fmt_number(base.high)} "
                 f"requests/s ({(base.high - base.low) / base.median * 100:.0f}% of their median) "
                 f"on this {os.cpu_count()}-CPU machine")
        if row.ratio is not None:
            notes.append(f"Target missed, {row.case}: {row.variant} keeps {row.ratio.median:.3f} "
                         f"of untraced throughput (target {row.target}); bounds: {noise}.")
        else:
            notes.append(f"Target missed, {row.case}, {row.variant}: median "
                         f"{fmt_number(row.value.median)} {row.unit} (target {row.target}), at "
                         f"{fmt_number(base.median)} untraced requests/s.")
    return notes
