"""``fusewb doctor`` on the real kernel: evidence agrees with the kernel, plan follows evidence."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import TIMEOUT_SCALE, require, require_root

FUSEWB = [sys.executable, "-m", "fusewb.cli"]


def _doctor_json() -> dict:
    out = subprocess.run(
        [*FUSEWB, "doctor", "--json"], capture_output=True, text=True, timeout=120 * TIMEOUT_SCALE
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_doctor_evidence_matches_kernel() -> None:
    require_root()
    diag = _doctor_json()
    feats = diag["features"]
    tracefs = Path(feats["tracefs"]["evidence"].removeprefix("mounted at "))
    for tp, present in feats["tracepoints"].items():
        assert present == (tracefs / "events" / tp.replace(":", "/")).is_dir(), tp
    kprobe_pmu = Path("/sys/bus/event_source/devices/kprobe").exists()
    assert feats["kprobes"]["ok"] == kprobe_pmu
    kallsyms = Path("/proc/kallsyms").read_text()
    assert feats["symbols"]["folio_wait_writeback"] == (" folio_wait_writeback\n" in kallsyms)
    assert feats["uprobes"]["ok"], feats["uprobes"]["evidence"]


def test_doctor_plan_follows_evidence() -> None:
    require_root()
    diag = _doctor_json()
    assert diag["plan"] is not None, diag["problems"]
    feats = diag["features"]
    if not feats["kprobes"]["ok"] and not feats["fentry"]["ok"]:
        assert diag["plan"]["name"] == "tracepoint"
        assert diag["plan"]["kprobes"] == []
    assert "writeback:folio_wait_writeback" in diag["plan"]["tracepoints"]


def test_doctor_lists_fuse_mount_with_bdi(tmp_path) -> None:
    require_root()
    require(shutil.which("bindfs") is not None, "needs Debian bindfs for a FUSE mount")
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    subprocess.run(["bindfs", str(src), str(dst)], check=True, timeout=20)
    try:
        st = dst.stat()
        bdi = f"{st.st_dev >> 8 & 0xFFF}:{(st.st_dev & 0xFF) | (st.st_dev >> 12 & ~0xFF)}"
        mounts = {m["mountpoint"]: m for m in _doctor_json()["mounts"]}
        assert str(dst) in mounts
        assert mounts[str(dst)]["bdi"] == bdi
        assert mounts[str(dst)]["max_ratio"] == Path(f"/sys/class/bdi/{bdi}/max_ratio").read_text().strip()
    finally:
        subprocess.run(["fusermount3", "-u", str(dst)], timeout=20)


def test_doctor_without_root_exits_2() -> None:
    require_root()
    require(shutil.which("setpriv") is not None, "needs setpriv (util-linux) to drop root")
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *FUSEWB, "doctor", "--no-test-loads"],
        capture_output=True, text=True, timeout=120, cwd="/",
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "not running as root" in out.stdout


def test_doctor_verifies_the_plan_it_proposes() -> None:
    """Before saying tracing works, the doctor compiled the plan and verifier-loaded every program."""
    require_root()
    diag = _doctor_json()
    plan = diag["plan"]
    assert plan is not None, diag["problems"]
    verified = plan["verified"]
    assert verified["programs"] == (len(plan["tracepoints"]) + len(plan["raw_tracepoints"]) + 2 * len(plan["kprobes"])
                                    + len(plan["entry_kprobes"]))
    assert 0 < verified["seconds"] < 60 * TIMEOUT_SCALE
    assert diag["can_trace"] and plan["absent_columns"] == {}


def test_doctor_exits_2_when_the_plan_does_not_compile() -> None:
    """A plan reading a field this kernel lacks (forced with a hidden --define): exit 2 and one
    line naming the compile error, instead of 'tracing will work'."""
    require_root()
    out = subprocess.run(
        [*FUSEWB, "doctor", "--no-test-loads", "--define", "TPF_BALANCE_DIRTY_PAGES_WB_DIRTY=no_such_field"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("cannot trace:")]
    assert len(lines) == 1, out.stdout
    assert lines[0].startswith("cannot trace: bcc cannot compile plan 'tracepoint'") or "plan 'kprobe'" in lines[0]
    assert "no_such_field" in lines[0] and "error" in lines[0]
    assert "compiled;" not in out.stdout
