"""Each load generator makes the kernel wait where it should on this kernel.

Observation: a private tracefs instance records the kernel stack of every
``writeback:folio_wait_writeback`` hit on the fixture's bdi (ftrace, independent of fusewb's tracer), plus
wall-clock waits against the configured latency and memory-cgroup counters for reclaim.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fusewb.fixtures.faults import Faults
from fusewb.fixtures.loads import LOADS
from tests.fixture_helpers import mounted
from tests.fixture_tracefs import WritebackWaits, tracefs_root
from tests.support import require, require_cgroup_memory, require_root

MIB = 1 << 20
LATENCY_S = 0.4


def _observe():
    require_root()
    require(tracefs_root() is not None, "needs tracefs")


@pytest.mark.parametrize("name, waited, function", [
    ("mmap-msync", "msync", "fuse_fsync"),
    ("write-close", "close", "fuse_flush"),
    ("fsync", "fsync", "fuse_fsync"),
])
def test_wait_for_writeback_in_the_syscall(tmp_path, name, waited, function) -> None:
    _observe()
    with mounted(tmp_path / "mnt", Faults(latency_ms=LATENCY_S * 1000)) as fx:
        lines: list[str] = []
        with WritebackWaits(fx.mount.bdi) as waits:
            result = LOADS[name](fx.mountpoint, size_mib=4, echo=lines.append)
        assert result.bytes == 4 * MIB and lines
        assert result.waits[waited] >= LATENCY_S * 0.8, result.summary()
        assert waits.hits(function) >= 1, waits.stacks[:3]
        assert fx.status()["writes"]["completed"] >= 1


def test_sync_does_not_wait_for_fuse_writeback_here(tmp_path) -> None:
    """On 6.18 sync(2)/syncfs skip FUSE's integrity wait: they return while the folios are still
    under writeback, and close() is what waits (in fuse_flush)."""
    _observe()
    latency = 1.5
    with mounted(tmp_path / "mnt", Faults(latency_ms=latency * 1000)) as fx:
        with WritebackWaits(fx.mount.bdi) as waits:
            result = LOADS["sync"](fx.mountpoint, size_mib=8, echo=lambda _: None)
        assert result.waits["close"] >= latency * 0.5, result.summary()
        assert result.waits["sync"] < result.waits["close"]
        assert result.waits["syncfs"] < result.waits["close"]
        assert waits.hits("fuse_flush") >= 1
        assert waits.hits("wait_sb_inodes") == 0


def test_hot_unplug_waits_in_migrate_pages(tmp_path) -> None:
    _observe()
    hold = 2.5
    with mounted(tmp_path / "mnt") as fx:
        with WritebackWaits(fx.mount.bdi) as waits:
            result = LOADS["hot-unplug"](fx.mountpoint, size_mib=32, hold_s=hold,
                                         echo=lambda _: None)
    assert waits.hits("offline_pages") >= 1 and waits.hits("migrate_pages") >= 1, waits.stacks[:3]
    assert result.waits["offline"] >= hold * 0.5, result.summary()
    # the kernel's own count: the file's folios were dirty or under writeback in ZONE_MOVABLE
    assert result.counters["movable_write_pending_pages"] >= (32 << 20) // 4096 // 2
    block = Path(f"/sys/devices/system/memory/memory{result.counters['memory_block']}")
    assert (block / "state").read_text().strip() == "online"
    assert "Movable" not in (block / "valid_zones").read_text(), "given back to its old zone"


def test_compaction_says_whether_it_met_the_folios(tmp_path) -> None:
    """compact_memory meets a folio only by chance: either it waited for the held writeback or
    the result says that it returned without meeting one."""
    _observe()
    hold = 2.0
    with mounted(tmp_path / "mnt") as fx:
        result = LOADS["compaction"](fx.mountpoint, size_mib=8, hold_s=hold, echo=lambda _: None)
    waited = result.waits["compact_memory"] >= hold / 2
    said = any("without meeting a FUSE folio" in note for note in result.notes)
    assert waited != said, result.summary()


def test_reclaim_runs_over_fuse_folios_in_a_small_cgroup(tmp_path) -> None:
    require_cgroup_memory()
    with mounted(tmp_path / "mnt", Faults(latency_ms=20)) as fx:
        result = LOADS["reclaim"](fx.mountpoint, size_mib=128, cgroup_mib=48,
                                  echo=lambda _: None)
        assert result.bytes == 128 * MIB
        assert result.counters["cgroup_limit_hits"] > 0, result.summary()
        assert result.counters["cgroup_peak_bytes"] <= 48 * MIB
        assert result.counters["cgroup_oom_kills"] == 0
        assert fx.status()["writes"]["bytes"] >= 128 * MIB


def test_self_wait_is_bounded_and_recovers(tmp_path) -> None:
    """Single-threaded server allocating per WRITE, in one small cgroup with its writer. If it
    gets stuck, both must be in memcg reclaim, and the load must recover them."""
    require_cgroup_memory()
    with mounted(tmp_path / "mnt", Faults(alloc_mib=16), single_threaded=True) as fx:
        result = LOADS["self-wait"](fx.mountpoint, size_mib=96, cgroup_mib=80, timeout_s=30,
                                    echo=lambda _: None)
        assert result.bytes == 96 * MIB
        assert result.counters["cgroup_limit_hits"] > 0
        assert result.counters["server_alloc_mib"] >= 16
        if "stuck_after_s" in result.counters:
            # stuck in memcg reclaim (throttled on writeback only the server can end) or, when
            # reclaim cannot free enough, in the memcg OOM wait (the load disables the killer)
            stacks = " ".join(result.notes)
            assert ("try_to_free_mem_cgroup_pages" in stacks
                    or "mem_cgroup_oom_synchronize" in stacks), result.notes
        status = fx.status()
        assert status["faults"]["alloc_mib"] == 16  # restored after the load
        (tmp_path / "mnt" / "after").write_bytes(b"alive")
        assert (tmp_path / "mnt" / "after").read_bytes() == b"alive"


def test_write_and_cli_load(tmp_path) -> None:
    with mounted(tmp_path / "mnt") as fx:
        result = LOADS["write"](fx.mountpoint, size_mib=32, block_kib=64, echo=lambda _: None)
        assert result.bytes == 32 * MIB and result.counters["kib_per_s"] > 0
        out = subprocess.run(
            [sys.executable, "-m", "fusewb.cli", "load", "write-close", "--mount", fx.mountpoint,
             "--size-mib", "2", "--json"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        record = json.loads(out.stdout.strip().splitlines()[-1])
        assert record["name"] == "write-close" and record["bytes"] == 2 * MIB
        bad = subprocess.run(
            [sys.executable, "-m", "fusewb.cli", "load", "fsync", "--mount", fx.mountpoint,
             "--cgroup-mib", "4"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "does not take --cgroup-mib" in bad.stderr
