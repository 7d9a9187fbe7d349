"""``fusewb run``: one command from mount to verdict for each FUSE writeback stall path.

A scenario mounts the fixture with its faults, starts the tracer on that mount only, runs a load
generator, stops tracing, analyses the capture and prints the report with a verdict: which flags
this kernel raised against the ones the scenario expects, and what the kernel did where kernel
versions differ. Everything is cleaned up on every exit, Ctrl-C and SIGTERM included.

Progress: a header per scenario (``== i/N name (elapsed)``) and a line when it is done; on a
terminal also a status line at the bottom (scenario i/N, its time, total elapsed), redrawn every
second and kept below everything printed.
"""

from __future__ import annotations

import html
import json
import os
import signal
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from fusewb.command import Command
from fusewb.contract import defaults

from fusewb.contract.errors import FusewbError
from fusewb.contract.extras import require
from fusewb.contract.worker import Worker

__all__ = ["Scenario", "SCENARIOS", "ScenarioOutcome", "RANGES", "run_scenario", "run", "temp_pages"]


# a phrase a verdict must hold, or a choice of phrases (one of them)
Phrase = str | tuple[str, ...]


def said(phrase: Phrase, text: str) -> bool:
    """Whether ``text`` holds ``phrase`` (one of them, for a choice)."""
    return any(p in text for p in ((phrase,) if isinstance(phrase, str) else phrase))


def phrase_label(phrase: Phrase) -> str:
    return phrase if isinstance(phrase, str) else " or ".join(phrase)


@dataclass(frozen=True)
class Scenario:
    """One stall path: how to provoke it and what the kernel is expected to do."""

    name: str
    title: str
    load: str  # name in fusewb.fixtures.loads.LOADS
    expect: str  # what the kernel does on this path, across versions
    expected_flags: tuple[str, ...]  # flags this scenario must raise on the fixture's bdi
    faults: dict[str, Any] = field(default_factory=dict)  # fusewb.fixtures.faults.Faults fields
    load_args: dict[str, Any] = field(default_factory=dict)
    single_threaded: bool = False
    # A row for every FUSE request (fusewb trace --all-requests), not only those over the
    # threshold: for a load whose WRITEs are fast but must be seen in flight.
    all_requests: bool = False
    # Stop tracing this many seconds into the load while the server still holds WRITEs, so the
    # capture shows the stall as ongoing; the fixture is released afterwards.
    stop_tracing_after_s: float | None = None
    # Percent of the dirty limit guaranteed to the fixture's bdi (Fixture.reserve_dirty_share):
    # for a load that puts more under writeback than FUSE's strictlimit share lets a writer
    # dirty while the server holds its WRITEs (a few MiB on a 3 GiB machine)
    dirty_share_pct: int | None = None
    # Kernels with FUSE temp pages (before 6.16; /proc/vmstat has nr_writeback_temp), as
    # measured on Debian 12's 6.1: what the kernel does there and the flags it must raise.
    temp_page_expect: str | None = None
    temp_page_flags: tuple[str, ...] | None = None
    # What the analysis' verdict (fusewb.analysis.verdict) must say besides the name of each
    # expected flag, on 6.16+ and with temp pages (None: the same as on 6.16+); a tuple in
    # them is a choice (one of its phrases)
    verdict_says: tuple[Phrase, ...] = ()
    temp_page_verdict_says: tuple[Phrase, ...] | None = None

    def expected(self, with_temp_pages: bool) -> tuple[str, tuple[str, ...]]:
        """(what the kernel does, the flags it must raise) on a kernel with or without temp pages."""
        if with_temp_pages:
            return (self.temp_page_expect or self.expect,
                    self.expected_flags if self.temp_page_flags is None else self.temp_page_flags)
        return self.expect, self.expected_flags

    def says(self, with_temp_pages: bool) -> tuple[Phrase, ...]:
        """The phrases the analysis' verdict must hold, on a kernel with or without temp pages."""
        if with_temp_pages and self.temp_page_verdict_says is not None:
            return self.temp_page_verdict_says
        return self.verdict_says


# The kernel ranges a scenario states an expectation for (``fusewb run --list``); which one a
# kernel is in is decided from the kernel itself (:func:`temp_pages`), never from its version.
RANGES = {"temp-pages": "before 6.16 (temp pages)", "no-temp-pages": "6.16 and later"}


def temp_pages() -> bool:
    """Whether this kernel copies FUSE writeback to temp pages (before 6.16): the evidence is
    the ``nr_writeback_temp`` counter in /proc/vmstat, which 6.16 removed with them."""
    try:
        return any(line.startswith("nr_writeback_temp ") for line in open("/proc/vmstat"))
    except OSError:
        return False


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "msync-slow",
            "msync(MS_SYNC) of a dirty shared mapping; the server answers each WRITE after 200 ms",
            load="mmap-msync",
            faults={"latency_ms": 200},
            load_args={"size_mib": 4, "timeout_s": 60},
            expect="msync waits in fuse_fsync -> file_write_and_wait_range -> "
            "folio_wait_writeback until the server has answered every WRITE (all kernels)",
            expected_flags=("BLOCKED_WAIT",),
            # the fsync wait, as the headline or among the other flagged waits: the pages
            # the flusher already put under writeback while the load dirtied them make
            # page_mkwrite wait too, at times longer (7.3 guest)
            verdict_says=("fsync",),
            temp_page_expect="temp pages end writeback at once, so msync waits in fuse_fsync -> "
            "fuse_set_nowrite for the inode's in-flight WRITEs instead (6.1: 250 ms)",
            temp_page_flags=("BLOCKED_WAIT",),
        ),
        Scenario(
            "close-slow",
            "close(2) of a file with dirty pages; the server answers each WRITE after 200 ms",
            load="write-close",
            faults={"latency_ms": 200},
            load_args={"size_mib": 4, "timeout_s": 60},
            expect="close calls fuse_flush -> write_inode_now, which waits for the writeback it "
            "started (writeback cache mode, all kernels)",
            expected_flags=("BLOCKED_WAIT",),
            verdict_says=("in close on",),
            temp_page_expect="temp pages end writeback at once, so close waits in fuse_flush -> "
            "fuse_set_nowrite for the inode's in-flight WRITEs instead (6.1: 212 ms)",
            temp_page_flags=("BLOCKED_WAIT",),
        ),
        Scenario(
            "sync-stalled",
            "sync(2) and syncfs(2) while the server holds every WRITE; then close",
            load="sync",
            faults={"stall": True},
            load_args={"size_mib": 8, "timeout_s": 30},
            stop_tracing_after_s=5.0,
            dirty_share_pct=10,
            expect="6.16 up to the fix: sync(2) hangs in wait_sb_inodes behind the server "
            "(SYNC_WAIT); with the fix (skip the data-integrity wait for FUSE) sync returns at "
            "once leaving the data unwritten, and close still waits in fuse_flush",
            expected_flags=("STALLED_REQUEST", "BLOCKED_WAIT"),
            # up to the fix sync(2) is what still waits (6.17.13 guest), with it close
            verdict_says=("was still waiting after", ("in sync on", "in close on"), "answered none of"),
            temp_page_verdict_says=("answered none of",),
            temp_page_expect="the copied pages' writeback ends at once, so sync(2) and syncfs(2) "
            "return without waiting for the held WRITEs (6.1: 113 ms and 2 ms; close 7 ms), "
            "leaving the data unwritten",
            temp_page_flags=("STALLED_REQUEST",),
        ),
        Scenario(
            "hot-unplug",
            "offline a memory block holding 32 MiB of FUSE folios under writeback (held 3 s)",
            load="hot-unplug",
            load_args={"size_mib": 32, "hold_s": 3.0, "timeout_s": 60},
            dirty_share_pct=10,
            expect="memory hot-unplug migrates every page of the block in MIGRATE_SYNC mode "
            "(offline_pages -> do_migrate_range -> migrate_pages) and waits for writeback to end, "
            "on every kernel including 6.16+; compaction and CMA wait the same way on the folios "
            "they meet. The block is moved to ZONE_MOVABLE first so the folios land in it, and "
            "given back afterwards",
            expected_flags=("MIGRATION_WAIT", "BLOCKED_WAIT"),
            verdict_says=("in migration on", "In memory migration or compaction"),
            temp_page_verdict_says=(),
            temp_page_expect="the temp-page copy ended the folios' writeback at once, so "
            "migration meets none under writeback and offlining does not wait for the server "
            "(6.1: offline 0.42 s while WRITEs were held 3 s)",
            temp_page_flags=(),
        ),
        Scenario(
            "reclaim-memcg",
            "write 200 MiB through a 64 MiB memory cgroup; the server answers each WRITE after 20 ms",
            load="reclaim",
            faults={"latency_ms": 20},
            load_args={"size_mib": 200, "cgroup_mib": 64, "timeout_s": 120},
            all_requests=True,  # its 20 ms WRITEs, in flight while the cgroup reclaims
            expect="before 6.16 memcg reclaim waited on FUSE writeback (RECLAIM_WAIT); from 6.16 "
            "reclaim skips folios of FUSE mappings under writeback, so the cgroup reclaims other "
            "memory and dirty throttling paces the writer",
            expected_flags=(),
            temp_page_expect="reclaim meets no FUSE folio under writeback (temp pages end it at "
            "once), so no RECLAIM_WAIT either; dirty throttling paces the writer (6.1: 832 "
            "cgroup limit hits, no reclaim-path wait)",
            temp_page_flags=(),
        ),
        Scenario(
            "self-wait",
            "a single-threaded server allocating 16 MiB per WRITE shares a 96 MiB memory cgroup "
            "with the writer",
            load="self-wait",
            single_threaded=True,
            load_args={"size_mib": 128, "cgroup_mib": 96, "alloc_mib": 16, "timeout_s": 60},
            expect="before 6.16 the server's own allocation could wait in reclaim on the "
            "writeback only it can finish (deadlock); from 6.16 reclaim skips those folios but "
            "still throttles on writeback (reclaim_throttle), so the server sleeps behind its "
            "own WRITEs until the load lifts the limit: SERVER_SELF_WAIT via RECLAIM_THROTTLE, "
            "no RECLAIM_WAIT",
            expected_flags=("SERVER_SELF_WAIT", "RECLAIM_THROTTLE"),
            verdict_says=("A thread of the FUSE server itself",),
            temp_page_verdict_says=(),
            temp_page_expect="reclaim meets none of the server's folios under writeback (temp "
            "pages), yet from 5.16 it still throttles on writeback (reclaim_throttle): under the v1 "
            "memory controller the 6.1 guest's server slept there 14 s while its own WRITEs were in "
            "flight (SERVER_SELF_WAIT, RECLAIM_THROTTLE; seen, not required); under cgroup v2 "
            "memory.high throttles it instead (6.12 guest: no SERVER_SELF_WAIT); 5.10 has no "
            "reclaim_throttle",
            temp_page_flags=(),
        ),
        Scenario(
            "dirty-throttle",
            "sequential 1 MiB writes of 256 MiB; the server answers each WRITE after 5 ms",
            load="write",
            faults={"latency_ms": 5},
            load_args={"size_mib": 256, "block_kib": 1024, "timeout_s": 120},
            expect="the FUSE bdi may hold only its max_ratio (1%) share of the dirty limit "
            "(strictlimit), so balance_dirty_pages pauses the writer early (all kernels since 3.x)",
            expected_flags=("DIRTY_THROTTLE",),
            verdict_says=("were paused by balance_dirty_pages",),
        ),
    ]
}


@dataclass
class ScenarioOutcome:
    """What one scenario run produced and whether the kernel did what was expected."""

    scenario: Scenario
    capture: Path
    report_text: str
    report_file: Path | None
    raised: frozenset[str]
    foreign_bdi_flags: list[str]
    load_summary: str
    load_notes: list[str]
    kernel_release: str
    temp_pages: bool = False  # the kernel used FUSE temp pages (before 6.16)
    # the fixture bdi's waits per kernel path (analysis wait_paths: path, count, max_ms)
    waits: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    report_verdict: str = ""  # the analysis' verdict (report["verdict"]["text"])
    # flags the analysis could not check, with why: the plan recorded none of the events they
    # need on this kernel (5.10: no requests without the fuse module's BTF)
    not_checked: dict[str, str] = field(default_factory=dict)

    @property
    def expected_flags(self) -> tuple[str, ...]:
        """The flags this kernel must raise: the expectation's, less those it cannot check."""
        return tuple(f for f in self.scenario.expected(self.temp_pages)[1] if f not in self.not_checked)

    @property
    def unchecked_flags(self) -> list[str]:
        """Expected flags the analysis could not check on this kernel (their events unrecorded)."""
        return [f for f in self.scenario.expected(self.temp_pages)[1] if f in self.not_checked]

    @property
    def expectation(self) -> str:
        text = self.scenario.expected(self.temp_pages)[0]
        return f"({RANGES['temp-pages']}) {text}" if self.temp_pages and self.scenario.temp_page_expect else text

    def result(self) -> dict[str, Any]:
        """This outcome as one entry of ``fusewb run --results`` (the README's kernel table)."""
        return {"scenario": self.scenario.name, "ok": self.ok, "flags": sorted(self.raised),
                "expected_flags": list(self.expected_flags), "missing": self.missing,
                "verdict_missing": self.verdict_missing, "not_checked": self.unchecked_flags,
                "foreign_bdi_flags": self.foreign_bdi_flags,
                "waits": self.waits,
                "seconds": round(self.seconds, 1)}

    @property
    def missing(self) -> list[str]:
        return [f for f in self.expected_flags if f not in self.raised]

    @property
    def verdict_expected(self) -> tuple[Phrase, ...]:
        """What the analysis' verdict must say on this kernel: each expected flag's name and
        the scenario's phrases."""
        says = self.scenario.says(self.temp_pages)
        # the phrases tell the evidence of the expected flags: not asked for when one of those
        # could not be checked here
        return (*self.expected_flags, *(() if self.unchecked_flags else says))

    @property
    def verdict_missing(self) -> list[str]:
        return [phrase_label(p) for p in self.verdict_expected if not said(p, self.report_verdict)]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.foreign_bdi_flags and not self.verdict_missing

    def verdict(self) -> str:
        lines = [f"scenario {self.scenario.name}: {self.scenario.title}"]
        lines.append(f"  expected: {self.expectation}")
        got = ", ".join(sorted(self.raised)) or "no flags"
        lines.append(f"  this kernel ({self.kernel_release}) raised: {got}")
        lines.append("  load: " + self.load_summary.splitlines()[0])
        for note in self.load_notes:
            lines.append(f"  load note: {note}")
        for flag in self.unchecked_flags:
            lines.append(f"  expected {flag} not checked on this kernel: {self.not_checked[flag]}")
        if self.missing:
            lines.append(f"  MISSING expected flags: {', '.join(self.missing)}")
        if self.foreign_bdi_flags:
            lines.append(f"  UNEXPECTED flags on other bdis: {', '.join(self.foreign_bdi_flags)}")
        lines.append(f"  analysis verdict: {self.report_verdict or '(none)'}")
        if self.verdict_missing:
            lines.append("  the verdict does NOT say: "
                         + ", ".join(repr(p) for p in self.verdict_missing))
        lines.append(f"  verdict: {'as expected' if self.ok else 'NOT as expected'}")
        return "\n".join(lines)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the same cleanup runs for both."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_load(scenario: Scenario, mountpoint: str, echo: Callable[[str], None]) -> Any:
    from fusewb.fixtures.loads import LOADS  # noqa: PLC0415

    return LOADS[scenario.load](mountpoint, echo=echo, **scenario.load_args)


def _load_with_early_stop(scenario: Scenario, fixture: Any, tracer: Any,
                          echo: Callable[[str], None]) -> Any:
    """Run the load in a thread; stop tracing mid-stall, then release the server."""
    worker = Worker(lambda: _run_load(scenario, fixture.mountpoint, echo),
                    f"fusewb-run-{scenario.name}")
    worker.join(scenario.stop_tracing_after_s)
    echo(f"stopping the tracer while the server still holds WRITEs ({scenario.stop_tracing_after_s:g} s in)")
    tracer.stop()
    fixture.release()
    if not worker.join(float(scenario.load_args.get("timeout_s", 60)) * 2 + 10):
        raise FusewbError(f"the {scenario.load} load did not finish after the release",
                          f"run 'fusewb fixture umount {fixture.mountpoint}'")
    return worker.result()


def _flags_elsewhere(report: dict[str, Any], bdi: str) -> list[str]:
    return sorted({f"{item['flag']}@{item['bdi']}" for item in report["flags"]
                   if item.get("bdi") not in (None, "", bdi)})


def run_scenario(scenario: Scenario, workdir: Path, fmt: str = "text", threshold_ms: float = defaults.THRESHOLD_MS,
                 echo: Callable[[str], None] = click.echo) -> ScenarioOutcome:
    """Run one scenario with its own fixture mount under ``workdir``; always cleans up."""
    from fusewb.analysis.report import render_report, render_text  # noqa: PLC0415
    from fusewb.fixtures.faults import Faults  # noqa: PLC0415
    from fusewb.fixtures.manage import mount_fixture  # noqa: PLC0415
    from fusewb.tracers.session import Tracer, TraceOptions  # noqa: PLC0415

    base = workdir / scenario.name
    base.mkdir(parents=True, exist_ok=True)
    mountpoint, capture = base / "mnt", base / "capture"
    echo(f"[{scenario.name}] mounting the fixture at {mountpoint} "
         f"(faults: {scenario.faults or 'none'}{', single-threaded' if scenario.single_threaded else ''})")
    with mount_fixture(mountpoint, Faults(**scenario.faults),
                       single_threaded=scenario.single_threaded) as fixture:
        bdi = fixture.mount.bdi
        if scenario.dirty_share_pct is not None:
            fixture.reserve_dirty_share(scenario.dirty_share_pct)
            echo(f"[{scenario.name}] bdi {bdi}: {scenario.dirty_share_pct}% of the dirty limit "
                 "reserved (min_ratio), so the load's writes fit under writeback")
        tracer = Tracer(TraceOptions(output=capture, mounts=[str(mountpoint)], threshold_ms=threshold_ms,
                                     all_requests=scenario.all_requests,
                                     live=lambda line: echo(f"  wait: {line}")))
        echo(f"[{scenario.name}] tracing bdi {bdi}; running load '{scenario.load}'")
        tracer.start_background()
        try:
            if scenario.stop_tracing_after_s is None:
                result = _run_load(scenario, fixture.mountpoint, lambda line: echo(f"  {line}"))
            else:
                result = _load_with_early_stop(scenario, fixture, tracer,
                                               lambda line: echo(f"  {line}"))
        finally:
            summary = tracer.stop()  # idempotent: an early stop's summary, or detach now
            fixture.release()
        for line in summary.lines():
            echo(f"  {line}")
        echo(f"[{scenario.name}] unmounting the fixture")
    out = base / ("report.html" if fmt == "html" else "report.txt")
    rendered = render_report(capture, fmt, threshold_ms, out)
    # the terminal always gets the text report, rendered from the same analysis
    text_report = rendered.text if fmt == "text" else render_text(rendered.report)
    release = rendered.report["capture"]["kernel_release"] or "?"
    waits = [{"path": str(row["path"]), "count": int(row["count"]), "max_ms": round(float(row["max_ms"]), 1)}
             for row in rendered.report["waits_by_path"] if row.get("bdi") == bdi]
    return ScenarioOutcome(
        scenario=scenario,
        capture=capture,
        report_text=text_report,
        report_file=rendered.output,
        raised=frozenset(item["flag"] for item in rendered.report["flags"] if item.get("bdi") in (None, "", bdi)),
        foreign_bdi_flags=_flags_elsewhere(rendered.report, bdi),
        load_summary=result.summary(),
        load_notes=list(result.notes),
        kernel_release=release,
        temp_pages=temp_pages(),
        waits=waits,
        report_verdict=rendered.report["verdict"]["text"],
        not_checked=dict(rendered.report["not_checked"]),
    )


def _write_index(workdir: Path, outcomes: list[ScenarioOutcome]) -> Path:
    """One HTML page linking each scenario's report, with its verdict."""
    rows = []
    for o in outcomes:
        link = o.report_file.relative_to(workdir) if o.report_file else None
        verdict = "as expected" if o.ok else "NOT as expected"
        rows.append(
            f"<tr><td><a href='{html.escape(str(link))}'>{html.escape(o.scenario.name)}</a></td>"
            f"<td>{html.escape(o.scenario.title)}</td><td>{html.escape(', '.join(sorted(o.raised)) or '-')}</td>"
            f"<td>{verdict}</td><td>{html.escape(o.expectation)}</td></tr>"
        )
    page = (
        "<!doctype html><meta charset='utf-8'><title>fusewb run</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top}table{border-collapse:collapse}</style>"
        "<h1>fusewb run</h1><table><tr><th>scenario</th><th>what</th><th>flags raised</th>"
        "<th>verdict</th><th>expected</th></tr>" + "".join(rows) + "</table>"
    )
    index = workdir / "index.html"
    index.write_text(page)
    return index


def _selected(names: tuple[str, ...]) -> list[Scenario]:
    if not names or "all" in names:
        return list(SCENARIOS.values())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise FusewbError(f"unknown scenario(s): {', '.join(unknown)}",
                          f"choose from {', '.join(SCENARIOS)} or all")
    return [SCENARIOS[n] for n in names]


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def _write_results(path: Path, outcomes: list[ScenarioOutcome]) -> None:
    """``--results``: this kernel and each scenario's outcome so far, as JSON (rewritten after
    every scenario, so a run cut short keeps what it did)."""
    doc = {"kernel_release": os.uname().release, "temp_pages": outcomes[0].temp_pages,
           "scenarios": [o.result() for o in outcomes]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def _run_chosen(chosen: list[Scenario], workdir: Path, fmt: str,
                threshold_ms: float, results: Path | None = None) -> list[ScenarioOutcome]:
    """Run each scenario with progress (module docstring); their outcomes."""
    from fusewb.tracers.live import StatusLine, terminal_columns, ticking  # noqa: PLC0415

    status = StatusLine(lambda text: click.echo(text, err=True, nl=False), sys.stderr.isatty(),
                        lambda: terminal_columns(sys.stderr), plain_every_s=None)

    def out(line: str) -> None:
        status.print(click.echo, line)

    def err(line: str) -> None:
        status.print(lambda text: click.echo(text, err=True), line)

    outcomes: list[ScenarioOutcome] = []
    started = time.monotonic()
    current = {"number": 1, "name": chosen[0].name, "since": started}

    def text() -> str:
        now = time.monotonic()
        return (f"fusewb run: scenario {current['number']}/{len(chosen)} {current['name']}, "
                f"{_clock(now - current['since'])} in it, {_clock(now - started)} elapsed")

    with _terminate_as_interrupt(), ticking(status, text):
        for number, scenario in enumerate(chosen, 1):
            current.update(number=number, name=scenario.name, since=time.monotonic())
            err(click.style(f"== {number}/{len(chosen)} {scenario.name} "
                            f"({time.monotonic() - started:.0f} s elapsed)", bold=True))
            outcome = run_scenario(scenario, workdir, fmt, threshold_ms, echo=out)
            outcome.seconds = time.monotonic() - current["since"]
            outcomes.append(outcome)
            if results is not None:
                _write_results(results, outcomes)
            out(outcome.report_text)
            out(outcome.verdict())
            err(f"== {number}/{len(chosen)} {scenario.name} done in "
                f"{time.monotonic() - current['since']:.0f} s ({len(chosen) - number} to go)")
            out("")
    return outcomes


@click.command(context_settings={"max_content_width": 100}, cls=Command)
@click.argument("scenarios", nargs=-1, metavar="SCENARIO...|all")
@click.option("--keep", "keep", type=click.Path(file_okay=False, path_type=Path),
              help="Keep captures and reports in a new run-* folder inside this folder "
              "(default: a temporary folder, removed unless the format is html).")
@click.option("--format", "fmt", type=click.Choice(["text", "html"]), default="text",
              show_default=True, help="html also writes one report per scenario and an index.")
@click.option("--threshold-ms", type=float, default=defaults.THRESHOLD_MS, show_default=True,
              help="A wait at or over this is a BLOCKED_WAIT.")
@click.option("--list", "list_only", is_flag=True,
              help="List the scenarios with what each kernel range is expected to do, and exit.")
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write each scenario's outcome on this kernel to this JSON file (flags, "
              "waits per path); the guest stage of make test builds README's kernel table from them.")
def run(scenarios: tuple[str, ...], keep: Path | None, fmt: str, threshold_ms: float,
        list_only: bool, results: Path | None) -> None:
    """Mount the fixture, trace, run a load, analyse, print the verdict, clean up.

    Scenarios: msync-slow, close-slow, sync-stalled, hot-unplug, reclaim-memcg, self-wait,
    dirty-throttle (or all). Exit status 0 when every scenario did what is expected on this
    kernel, 1 when one did not, 2 on bad input (not root, unknown scenario).

    \b
    Examples:
      sudo fusewb run --list
      sudo fusewb run msync-slow
      sudo fusewb run all --keep /tmp/fusewb-all --format html
    """
    if list_only:
        here = RANGES["temp-pages" if temp_pages() else "no-temp-pages"]
        click.echo(f"This kernel ({os.uname().release}): {here}.")
        for s in SCENARIOS.values():
            click.echo(click.style(f"{s.name:<15} {s.title}", bold=True))
            for key, with_temp in (("no-temp-pages", False), ("temp-pages", True)):
                text, flags = s.expected(with_temp)
                click.echo(f"  {RANGES[key]}: expect {', '.join(flags) or 'no flag'}")
                click.echo(textwrap.fill(text, width=96, initial_indent="    ", subsequent_indent="    "))
        return
    chosen = _selected(scenarios)
    if os.geteuid() != 0:
        raise FusewbError("fusewb run needs root (BPF, FUSE mounts, cgroups)", "run it with sudo")
    if fmt == "html":
        require("report")  # before any scenario, not after the first
    require("fixture")
    if keep is not None:
        # a new folder per run: earlier captures in --keep are never overwritten
        keep.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=time.strftime("run-%Y%m%d-%H%M%S-"), dir=keep))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="fusewb-run-"))
    os.chmod(workdir, 0o700)
    outcomes = _run_chosen(chosen, workdir, fmt, threshold_ms, results)
    click.echo(click.style("Summary", bold=True))
    for o in outcomes:
        click.echo(f"  {o.scenario.name:<15} {'as expected' if o.ok else 'NOT as expected':<16} "
                   f"{', '.join(sorted(o.raised)) or 'no flags'}")
    if fmt == "html":
        click.echo(f"HTML report: {_write_index(workdir, outcomes)}")
    elif keep is None:
        import shutil  # noqa: PLC0415

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        click.echo(f"captures and reports kept in {workdir}")
    if not all(o.ok for o in outcomes):
        raise SystemExit(1)
