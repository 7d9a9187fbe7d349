"""The production install of README ("On a production host"), for real: a minimal Debian root
from Debian's archive (debootstrap), the distribution's bcc installed in it and nothing else
(this kernel has neither a build tree nor kheaders: bcc compiles against the headers the
artifact bundles), fusewb's one-file artifact of ``make dist`` copied in, and from inside it (as
root, on this kernel) ``doctor``, ``stuck --json`` while the fixture (mounted from the
development side, inside the root) holds a WRITE, and a short ``trace`` that captures an fsync's
wait; then ``analyze`` of that capture back on the development side.

It writes what it measured (time from nothing to the first trace, installed sizes) to
``build/test-results/clean-root.json`` and prints it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from fusewb.fixtures.faults import Faults
from tests.clean_root import CleanRoot
from tests.fixture_helpers import asleep_in, mounted, wait_until
from tests.support import TIMEOUT_SCALE, require, require_bpf, require_fuse

REPO = Path(__file__).resolve().parent.parent
# Step 1 of README's production section: the distribution's bcc
PRODUCTION_PACKAGES = ["python3-bpfcc"]
INSIDE_PYZ = "/usr/local/bin/fusewb.pyz"
FUSEWB = ["python3", INSIDE_PYZ]
INSIDE_MOUNT = "/mnt/fusewb"
HOLD_S = 1.0  # how long the fixture holds the traced fsync's WRITE
FSYNC = """
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY)
os.write(fd, b"p" * 65536)
os.fsync(fd)
"""
RESULTS = REPO / "build" / "test-results" / "clean-root.json"


def _fsync_child(path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FSYNC, str(path)], start_new_session=True)


def _ended(child: subprocess.Popen) -> int | None:
    try:
        return child.wait(timeout=30 * TIMEOUT_SCALE)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=10)
        return None


def _make_dist(out: Path) -> Path:
    done = subprocess.run(["scripts/dist.sh", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (pyz,) = out.glob("fusewb-*.pyz")
    return pyz


def test_production_install_in_a_clean_debian_root(tmp_path: Path) -> None:
    require_fuse()
    require_bpf()
    require(shutil.which("debootstrap") is not None, "needs debootstrap (make setup installs it)")
    started = time.monotonic()
    pyz = _make_dist(tmp_path / "dist")
    dist_s = time.monotonic() - started
    root = CleanRoot(tmp_path / "root")
    children: list[subprocess.Popen] = []
    try:
        root.build(PRODUCTION_PACKAGES)
        shutil.copyfile(pyz, root.path / INSIDE_PYZ.lstrip("/"))

        doctor = root.run([*FUSEWB, "doctor"], timeout=300 * TIMEOUT_SCALE)
        assert doctor.returncode == 0, doctor.stdout[-3000:] + doctor.stderr[-3000:]
        # the test loads need no bpftool, which the root does not have
        assert root.run(["sh", "-c", "command -v bpftool"], timeout=60).returncode != 0
        assert "raw tracepoints  yes  test load of a raw_tracepoint program: ok" in doctor.stdout, doctor.stdout
        assert "bcc headers      bundled" in doctor.stdout, doctor.stdout

        mountpoint = root.path / INSIDE_MOUNT.lstrip("/")
        with mounted(mountpoint, Faults(stall=True)) as fx:
            # stuck: an fsync held behind a stalled WRITE, seen from inside the root
            children.append(_fsync_child(mountpoint / "held"))
            assert wait_until(lambda: asleep_in(children[-1].pid, "fuse_fsync"), timeout=15), \
                "the fsync never slept in fuse_fsync"
            stuck = root.run([*FUSEWB, "stuck", "--json"], timeout=120 * TIMEOUT_SCALE)
            assert stuck.returncode == 0, stuck.stderr[-3000:]
            tasks = [t for t in json.loads(stuck.stdout)["tasks"] if t["pid"] == children[-1].pid]
            assert len(tasks) == 1, stuck.stdout[-3000:]
            # the writer runs outside the root: its mount and file as that task sees them
            assert (tasks[0]["path"], tasks[0]["mount"], tasks[0]["file"]) == (
                "fsync", str(mountpoint), str(mountpoint / "held"))
            assert tasks[0]["connection"] == fx.mount.connection
            fx.release()
            assert _ended(children[-1]) == 0

            # trace: an fsync that waits HOLD_S for its WRITE while the tracer runs
            log = tmp_path / "trace.log"
            with log.open("w") as out:
                tracer = root.popen([*FUSEWB, "trace", "--mount", INSIDE_MOUNT, "-o", "/root/cap"],
                                    stdout=out, stderr=subprocess.STDOUT)
            children.append(tracer)
            assert wait_until(lambda: any(line.startswith("tracing") for line in log.read_text().splitlines())
                              or tracer.poll() is not None, timeout=120), log.read_text()[-3000:]
            assert tracer.poll() is None, log.read_text()[-3000:]
            fx.stall()
            children.append(_fsync_child(mountpoint / "traced"))
            assert wait_until(lambda: asleep_in(children[-1].pid, "folio_wait_writeback"), timeout=15), \
                "the traced fsync never waited in folio_wait_writeback"
            time.sleep(HOLD_S)
            fx.release()
            assert _ended(children[-1]) == 0
            first_trace_s = time.monotonic() - started
            tracer.send_signal(signal.SIGINT)
            assert _ended(tracer) == 0, log.read_text()[-3000:]

        report = subprocess.run([sys.executable, "-m", "fusewb.cli", "analyze", str(root.path / "root/cap"),
                                 "--format", "json"], capture_output=True, text=True, timeout=120)
        assert report.returncode == 0, report.stderr[-3000:]
        analysed = json.loads(report.stdout)
        assert analysed["capture"]["complete"] and analysed["capture"]["lost_events"] == 0
        blocked = [f for f in analysed["flags"] if f["flag"] == "BLOCKED_WAIT"]
        assert any(f["pid"] == children[-1].pid and f["path"] == "fsync" and not f["ongoing"]
                   and f["duration_ms"] >= HOLD_S * 1000 for f in blocked), blocked

        measured = {
            "seconds": {"make dist": round(dist_s, 1), **{k: round(v, 1) for k, v in root.seconds.items()},
                        "nothing to first trace": round(first_trace_s, 1)},
            "mib": {"debootstrap minbase": root.mib["base"],
                    " + ".join(PRODUCTION_PACKAGES): root.mib["packages"],
                    "fusewb.pyz": round(pyz.stat().st_size / 2**20, 1),
                    "fusewb.pyz unpacked (~/.shiv)": root.size_mib("root/.shiv")},
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(measured, indent=2) + "\n")
        print(f"clean root: {json.dumps(measured)}")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        root.remove()
