"""End to end on the real kernel: each ``fusewb run`` scenario, and a bindfs mount fusewb did not start.

Each test mounts the fixture, traces it with real BPF, runs the load, analyses the capture, and
checks the diagnosis from the capture: the expected flags on the fixture's bdi, none on any other
bdi, and where this kernel does not wait on a path, what it did instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import require, require_bpf, require_cgroup_memory, require_fuse


def _kernel_ready() -> None:
    require_fuse()
    require_bpf()


def _run(name: str, workdir: Path):
    from fusewb.scenarios import SCENARIOS, run_scenario

    lines: list[str] = []
    outcome = run_scenario(SCENARIOS[name], workdir, echo=lines.append)
    return outcome, lines


def _flags_and_capture(outcome):
    from fusewb.analysis import flags, load_capture

    cap = load_capture(outcome.capture)
    return flags(cap, 50.0), cap


def _fixture_bdi(cap) -> str:
    (mount,) = [m for m in cap.sources[0].meta["mounts"] if m["fstype"] == "fuse.fusewb"]
    return mount["bdi"]


def _assert_only_fixture_bdi(raised, bdi: str) -> None:
    others = raised[raised["bdi"].notna() & (raised["bdi"].astype(object) != bdi)]
    assert others.empty, others[["flag", "bdi"]].to_string()


def _waits_by_path(cap) -> dict[str, int]:
    """Every wait per kernel path: the histograms' counts (rows are only the slow waits)."""
    from fusewb.analysis import wait_paths

    frame = wait_paths(cap)
    return frame.groupby(frame["path"].astype(object))["count"].sum().to_dict() if len(frame) else {}


@pytest.mark.parametrize(
    ("name", "path"),
    [("msync-slow", "fsync"), ("close-slow", "close")],
)
def test_slow_server_blocks_path(tmp_path, name: str, path: str) -> None:
    _kernel_ready()
    outcome, _ = _run(name, tmp_path)
    raised, cap = _flags_and_capture(outcome)
    bdi = _fixture_bdi(cap)
    # the verdict names the task, the path and the mount, and what the server did
    assert f" in {path} on " in outcome.report_verdict and f"bdi {bdi}" in outcome.report_verdict
    assert "the server python" in outcome.report_verdict, outcome.report_verdict
    blocked = raised[(raised["flag"] == "BLOCKED_WAIT") & (raised["bdi"].astype(object) == bdi)]
    assert not blocked.empty
    assert set(blocked["path"].astype(object)) == {path}
    # the wait took about as long as the server's 200 ms latency
    assert blocked["duration_ms"].max() >= 150
    _assert_only_fixture_bdi(raised, bdi)
    assert outcome.ok, outcome.verdict()


def test_sync_stalled_returns_at_once_close_waits(tmp_path) -> None:
    _kernel_ready()
    outcome, _ = _run("sync-stalled", tmp_path)
    raised, cap = _flags_and_capture(outcome)
    bdi = _fixture_bdi(cap)
    _assert_only_fixture_bdi(raised, bdi)
    stalled = raised[raised["flag"] == "STALLED_REQUEST"]
    assert not stalled.empty and stalled["ongoing"].any()
    requests = cap.table("requests")
    writes = requests[requests["opcode_name"].astype(object) == "WRITE"]
    assert writes["ongoing"].any(), "the held WRITEs are recorded as never completed"
    paths = _waits_by_path(cap)
    # this kernel carries the fix: no data-integrity wait for FUSE in sync(2)/syncfs(2)...
    assert paths.get("sync", 0) == 0, paths
    # ...and says so from what the load measured
    assert any("skips the data-integrity wait" in note for note in outcome.load_notes), outcome.load_notes
    # close still waited, and was still waiting when tracing stopped
    blocked = raised[(raised["flag"] == "BLOCKED_WAIT") & (raised["path"].astype(object) == "close")]
    assert not blocked.empty and blocked["ongoing"].any()
    # the verdict: the close still waiting, behind a server that answered none of the WRITEs
    assert not outcome.verdict_missing, outcome.verdict()


def test_hot_unplug_waits_in_migration(tmp_path) -> None:
    _kernel_ready()
    outcome, _ = _run("hot-unplug", tmp_path)
    raised, cap = _flags_and_capture(outcome)
    bdi = _fixture_bdi(cap)
    _assert_only_fixture_bdi(raised, bdi)
    migration = raised[(raised["flag"] == "MIGRATION_WAIT") & (raised["bdi"].astype(object) == bdi)]
    assert not migration.empty
    evidence = migration["evidence"].astype(str)
    assert evidence.str.contains("migrate_pages").any() and evidence.str.contains("offline_pages").any()
    # the fixture held the WRITEs for 3 s: the offline waited for a good part of that
    assert migration["duration_ms"].max() >= 1000
    assert outcome.ok, outcome.verdict()


def test_reclaim_in_memcg_skips_fuse_writeback(tmp_path) -> None:
    _kernel_ready()
    require_cgroup_memory()
    outcome, _ = _run("reclaim-memcg", tmp_path)
    raised, cap = _flags_and_capture(outcome)
    bdi = _fixture_bdi(cap)
    _assert_only_fixture_bdi(raised, bdi)
    vm = cap.table("vm")
    memcg = vm[vm["kind"].astype(object) == "memcg_reclaim"]
    assert len(memcg) > 0, "memcg reclaim ran"
    # reclaim ran while FUSE WRITEs were in flight...
    requests = cap.table("requests")
    writes = requests[requests["opcode_name"].astype(object) == "WRITE"]
    ends = writes["end_ts_ns"].fillna(writes["send_ts_ns"] + writes["duration_ns"])
    overlap = [((writes["send_ts_ns"] <= t) & (ends >= t)).any() for t in memcg["ts_ns"]]
    assert any(overlap), "memcg reclaim overlapped FUSE writeback"
    # ...and no task waited on FUSE writeback in reclaim (6.16+ skips such folios)
    assert _waits_by_path(cap).get("reclaim", 0) == 0
    assert "RECLAIM_WAIT" not in set(raised["flag"].astype(object))
    assert "RECLAIM_WAIT" not in outcome.report_verdict and "In memory reclaim" not in \
        outcome.report_verdict, outcome.report_verdict


def test_self_wait_server_is_throttled_not_deadlocked(tmp_path) -> None:
    _kernel_ready()
    require_cgroup_memory()
    from fusewb.fixtures.loads.memory import RECLAIM_PASS_GRACE
    from fusewb.scenarios import SCENARIOS

    start = time.monotonic()
    outcome, _ = _run("self-wait", tmp_path)
    # the load's own bound: stuck detection, then at most RECLAIM_PASS_GRACE x its timeout
    bound = SCENARIOS["self-wait"].load_args["timeout_s"] * (RECLAIM_PASS_GRACE + 1) + 30
    assert time.monotonic() - start < bound, "bounded and recovered"
    raised, cap = _flags_and_capture(outcome)
    bdi = _fixture_bdi(cap)
    _assert_only_fixture_bdi(raised, bdi)
    server_tgids = {s["tgid"] for s in cap.sources[0].meta["server_threads"] if s["bdi"] == bdi}
    assert server_tgids, "the fixture's server threads were identified"
    # this kernel does not wait on FUSE writeback in reclaim, not even the server itself
    assert _waits_by_path(cap).get("reclaim", 0) == 0
    assert "RECLAIM_WAIT" not in set(raised["flag"].astype(object))
    vm = cap.table("vm")
    server_reclaim = vm[vm["tgid"].isin(server_tgids) & vm["kind"].astype(object).isin(
        ["memcg_reclaim", "vmscan_throttled", "shrink_inactive"])]
    assert len(server_reclaim) > 0, "the server itself reclaimed in its memory cgroup"
    # ...but it was throttled in reclaim behind its own in-flight WRITEs
    self_wait = raised[(raised["flag"] == "SERVER_SELF_WAIT") & (raised["bdi"].astype(object) == bdi)]
    assert not self_wait.empty
    assert set(self_wait["path"].astype(object)) == {"reclaim"}
    assert set(self_wait["tgid"].astype(int)) <= server_tgids
    assert outcome.ok, outcome.verdict()


def test_dirty_throttle_on_fuse_bdi(tmp_path) -> None:
    _kernel_ready()
    outcome, _ = _run("dirty-throttle", tmp_path)
    raised, cap = _flags_and_capture(outcome)
    bdi = _fixture_bdi(cap)
    _assert_only_fixture_bdi(raised, bdi)
    throttle = raised[(raised["flag"] == "DIRTY_THROTTLE") & (raised["bdi"].astype(object) == bdi)]
    assert not throttle.empty
    table = cap.table("throttle")
    assert (table["bdi"].astype(object) == bdi).all()
    assert (table["pause_ms"] > 0).any()
    assert not outcome.verdict_missing, outcome.verdict()


def test_run_cli_html_index(tmp_path) -> None:
    _kernel_ready()
    out = subprocess.run(
        [sys.executable, "-m", "fusewb.cli", "run", "msync-slow", "--keep", str(tmp_path), "--format", "html"],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "HTML report:" in out.stdout
    index = Path(out.stdout.split("HTML report:")[1].split()[0])
    assert index.parent.parent == tmp_path
    assert "msync-slow" in index.read_text()
    report = (index.parent / "msync-slow" / "report.html").read_text()
    assert "<h2>Verdict</h2>" in report and "<h2>Timeline</h2>" in report
    assert "BLOCKED_WAIT" in report


def test_run_unknown_scenario_exits_2() -> None:
    out = subprocess.run([sys.executable, "-m", "fusewb.cli", "run", "no-such"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "unknown scenario" in out.stderr
    assert "Traceback" not in out.stderr


def _bindfs_over_slow_fixture(tmp_path: Path, latency_ms: float):
    """A bindfs mount whose every WRITE goes through a write-through fixture with latency.

    bindfs (single-threaded, no writeback cache) answers each WRITE only after the fixture has
    answered its own: a slow C/libfuse server that fusewb did not start."""
    from fusewb.fixtures.faults import Faults
    from fusewb.fixtures.manage import mount_fixture

    require(shutil.which("bindfs") is not None, "needs Debian bindfs")
    fixture = mount_fixture(tmp_path / "slow", Faults(latency_ms=latency_ms), writeback_cache=False)
    target = tmp_path / "bindfs"
    target.mkdir()
    try:
        subprocess.run(["bindfs", str(tmp_path / "slow"), str(target)], check=True, timeout=20)
    except BaseException:
        fixture.unmount()
        raise
    return fixture, target


@pytest.mark.parametrize(("load", "flag", "load_args"), [
    ("mmap-msync", "BLOCKED_WAIT", {"size_mib": 2, "timeout_s": 60}),
    ("hot-unplug", "MIGRATION_WAIT", {"size_mib": 4, "timeout_s": 60, "via_mmap": True}),
])
def test_bindfs_mount_is_diagnosed_the_same_way(tmp_path, load: str, flag: str,
                                                load_args: dict) -> None:
    _kernel_ready()
    from fusewb.analysis import flags, load_capture
    from fusewb.fixtures.loads import LOADS
    from fusewb.tracers.mounts import mount_for_path
    from fusewb.tracers.session import Tracer, TraceOptions

    fixture, target = _bindfs_over_slow_fixture(tmp_path, latency_ms=300)
    try:
        bindfs_bdi = mount_for_path(target).bdi
        capture = tmp_path / "cap"
        tracer = Tracer(TraceOptions(output=capture, mounts=[str(target)]))
        tracer.start_background()
        try:
            LOADS[load](str(target), echo=lambda _line: None, **load_args)
        finally:
            tracer.stop()
        cap = load_capture(capture)
        raised = flags(cap, 50.0)
        assert set(raised["bdi"].dropna().astype(object)) == {bindfs_bdi}
    finally:
        subprocess.run(["fusermount3", "-u", str(target)], timeout=30)
        fixture.unmount()
    hits = raised[raised["flag"] == flag]
    assert not hits.empty, raised[["flag", "bdi", "path"]].to_string()
    mounts = {m["bdi"]: m for m in cap.sources[0].meta["mounts"]}
    assert mounts[bindfs_bdi]["fstype"] == "fuse"


def test_verdicts_follow_the_kernels_writeback_era() -> None:
    """Kernels with temp pages (before 6.16) are held to what Debian 12's 6.1 measured: e.g.
    hot-unplug does not wait there, and self-wait is throttled by memory.high instead."""
    from fusewb.scenarios import SCENARIOS, ScenarioOutcome

    def outcome(name: str, raised: set[str], temp: bool, said: str = "") -> ScenarioOutcome:
        return ScenarioOutcome(SCENARIOS[name], Path("cap"), "", None, frozenset(raised), [], "load", [],
                               "k", temp_pages=temp, report_verdict=said)

    assert outcome("hot-unplug", {"STALLED_REQUEST"}, True).ok
    assert not outcome("hot-unplug", {"STALLED_REQUEST"}, False).ok
    assert "temp pages" in outcome("self-wait", set(), True).verdict()
    fsync = "python3[5] waited 207 ms in fsync on /mnt (bdi 0:43): ... (BLOCKED_WAIT)."
    assert outcome("msync-slow", {"BLOCKED_WAIT"}, True, fsync).ok
    assert not outcome("msync-slow", set(), True, fsync).ok
    # the verdict is held to the scenario's expectation too
    unsaid = outcome("msync-slow", {"BLOCKED_WAIT"}, False, "python3[5] waited 207 ms in close")
    assert not unsaid.ok and unsaid.verdict_missing == ["BLOCKED_WAIT", "fsync"]
    assert "the verdict does NOT say: 'BLOCKED_WAIT', 'fsync'" in unsaid.verdict()
    # a longer page_mkwrite wait may head the verdict: the fsync wait is then among the others
    mkwrite = ("python3[5] waited 241 ms in page_mkwrite on /mnt (bdi 0:43); 1 other flagged wait "
               "(fsync) (BLOCKED_WAIT).")
    assert outcome("msync-slow", {"BLOCKED_WAIT"}, False, mkwrite).ok
    # a choice: up to the sync fix sync(2) still waits (6.17.13), with it close does
    held = "x was still waiting after 4.77 s in {} on /m: the server answered none of 9 WRITEs"
    for waiter in ("sync", "close"):
        assert outcome("sync-stalled", {"BLOCKED_WAIT", "STALLED_REQUEST"}, False,
                       held.format(waiter) + " (BLOCKED_WAIT, STALLED_REQUEST)").ok
    neither = outcome("sync-stalled", {"BLOCKED_WAIT", "STALLED_REQUEST"}, False,
                      held.format("flusher") + " (BLOCKED_WAIT, STALLED_REQUEST)")
    assert neither.verdict_missing == ["in sync on or in close on"]
    assert all(s.temp_page_flags is not None for s in SCENARIOS.values() if s.name != "dirty-throttle")


def test_list_states_each_kernel_ranges_expectation_and_results_are_written(tmp_path: Path) -> None:
    """``fusewb run --list`` gives each scenario's expected flags for both kernel ranges, from
    the declarations; ``--results`` holds each outcome as the README's kernel table reads it."""
    import json

    from click.testing import CliRunner

    from fusewb.scenarios import RANGES, SCENARIOS, ScenarioOutcome, _write_results, run

    out = CliRunner().invoke(run, ["--list"]).output
    for scenario in SCENARIOS.values():
        block = out.split(scenario.name, 1)[1].split("\n\n")[0]
        for with_temp, key in ((False, "no-temp-pages"), (True, "temp-pages")):
            flags = ", ".join(scenario.expected(with_temp)[1]) or "no flag"
            assert f"  {RANGES[key]}: expect {flags}" in block, (scenario.name, key)
    good = ScenarioOutcome(SCENARIOS["msync-slow"], Path("cap"), "", None, frozenset({"BLOCKED_WAIT"}), [],
                           "load", [], "k", temp_pages=True, waits=[{"path": "fsync", "count": 3, "max_ms": 250.0}],
                           seconds=36.04, report_verdict="x waited 250 ms in fsync on /m: BLOCKED_WAIT")
    bad = ScenarioOutcome(SCENARIOS["hot-unplug"], Path("cap"), "", None, frozenset(), [], "load", [], "k")
    _write_results(tmp_path / "r.json", [good, bad])
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [s["scenario"] for s in doc["scenarios"]] == ["msync-slow", "hot-unplug"]
    assert doc["scenarios"][0] == {"scenario": "msync-slow", "ok": True, "flags": ["BLOCKED_WAIT"],
                                   "expected_flags": ["BLOCKED_WAIT"], "missing": [], "verdict_missing": [],
                                   "not_checked": [],
                                   "foreign_bdi_flags": [],
                                   "waits": [{"path": "fsync", "count": 3, "max_ms": 250.0}], "seconds": 36.0}
    assert doc["scenarios"][1]["missing"] == ["MIGRATION_WAIT", "BLOCKED_WAIT"] and not doc["scenarios"][1]["ok"]


def test_expected_flags_a_kernel_cannot_check_are_said_not_missed() -> None:
    """5.10 traces no requests (the fuse module has no BTF): sync-stalled's STALLED_REQUEST and
    the verdict's words on the server's answers are not asked for there, and the outcome says so."""
    from fusewb.scenarios import SCENARIOS, ScenarioOutcome

    why = "the capture has no requests events"
    outcome = ScenarioOutcome(SCENARIOS["sync-stalled"], Path("cap"), "", None, frozenset({"DIRTY_THROTTLE"}), [],
                              "load", [], "5.10.0-46-amd64", temp_pages=True, report_verdict="nothing to say",
                              not_checked={"STALLED_REQUEST": why})
    assert outcome.ok and outcome.expected_flags == () and outcome.unchecked_flags == ["STALLED_REQUEST"]
    assert f"expected STALLED_REQUEST not checked on this kernel: {why}" in outcome.verdict()
    assert outcome.result()["not_checked"] == ["STALLED_REQUEST"]
    checked = ScenarioOutcome(SCENARIOS["sync-stalled"], Path("cap"), "", None, frozenset({"STALLED_REQUEST"}), [],
                              "load", [], "6.1.0-57-amd64", temp_pages=True, report_verdict="STALLED_REQUEST")
    assert not checked.ok and checked.verdict_missing == ["answered none of"]
