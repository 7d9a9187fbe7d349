"""``fusewb export --perfetto`` of a real capture: msync of 4 MiB through a FUSE server that
answers each WRITE after 300 ms, traced for real; the trace holds the msync task's waits on its
thread track and the WRITEs on the connection's lanes, as the capture has them."""

from __future__ import annotations

import subprocess
import sys


from fusewb.analysis.perfetto import read_trace
from tests.test_export_perfetto import check_trace
from tests.test_tracer import MSYNC_LOAD, _prepare, finish, fixture, load, read_table, tracing



def test_real_capture_exports_to_perfetto(tmp_path) -> None:
    _prepare()
    capture = tmp_path / "cap"
    with fixture(tmp_path, latency_ms=300) as fx:
        with tracing(capture, fx.mountpoint):
            msync = load(MSYNC_LOAD, f"{fx.mountpoint}/msync.dat", 4)
            finish(msync)
        bdi = fx.mount.bdi
    out = tmp_path / "real.pftrace"
    done = subprocess.run([sys.executable, "-m", "fusewb.cli", "export", str(capture),
                           "--perfetto", "-o", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    check_trace(capture, out)
    got = read_trace(out)
    threads = {u: t for u, t in got.tracks.items() if t["tid"] == msync.pid}
    assert threads, got.tracks  # the msync task has its own track
    waits = got.slices[got.slices.track.isin(threads)]
    assert len(waits) == (read_table(capture, "waits").pid == msync.pid).sum() > 0
    assert all(a["bdi"] == bdi and a["stack"] for a in waits.args)
    assert waits.dur.max() >= 150e6  # behind a 300 ms WRITE
    writes = got.slices[got.slices.name == "WRITE"]
    assert len(writes) > 0 and writes.dur.min() >= 250e6
