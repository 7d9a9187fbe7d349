"""``fusewb export --perfetto``: the trace read back (Perfetto's own protobuf messages, parsed
independently of the writer's bookkeeping) holds every wait as a slice on its task's track with
its arguments, every FUSE request on its connection's lanes without overlap, and counters that
agree with the analysis; on the hand-made capture, a large synthetic one and bad input.
A real capture from a real trace is exported in test_export_perfetto_real."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fusewb.analysis.capture import load_capture
from fusewb.analysis.perfetto import PAGE_BYTES, export_perfetto, read_trace
from fusewb.analysis.synthetic import START_NS, synthetic_capture
from fusewb.analysis.tables import kernel_ino
from fusewb.cli import cli
from tests.analysis_cases import everything_capture

FUSEWB = [sys.executable, "-m", "fusewb.cli"]
# a connection's WRITEs in flight (of the rows: "WRITEs of 1 ms or more" when only those are)
_WRITES_IN_FLIGHT = r".* WRITEs( of [0-9.]+ ms or more)? in flight$"


def check_trace(capture: Path, trace_file: Path) -> None:
    """Every wait, request and counter of ``capture`` is in ``trace_file`` as it should be."""
    cap = load_capture(capture)
    got = read_trace(trace_file)
    tracks = got.tracks
    slices = got.slices.assign(
        tid=[tracks[t]["tid"] for t in got.slices.track],
        parent=[tracks[t]["parent"] for t in got.slices.track],
        track_name=[tracks[t]["name"] or tracks[t]["thread_name"] for t in got.slices.track],
    )
    # waits: on the thread track of their task (or an overlap lane under its process)
    raw = cap.table("waits")
    wait_slices = slices[slices.args.map(lambda a: "path" in a)]
    assert len(wait_slices) == len(raw)
    process_of = {u: d["pid"] for u, d in tracks.items() if d["process_name"]}
    wait_slices = wait_slices.assign(
        tgid=wait_slices.parent.map(process_of),
        # a thread track names its task by tid; an overlap lane by "comm pid overlapping waits"
        task=[int(tid) if tid == tid and tid is not None else int(name.split()[-3])
              for tid, name in zip(wait_slices.tid, wait_slices.track_name)])
    expected = sorted(zip(raw.ts_ns, raw.pid, raw.tgid, np.maximum(raw.duration_ns, 1), raw.ino.map(kernel_ino),
                          raw.bdi.astype(str), raw.ongoing))
    exported = sorted(zip(wait_slices.ts, wait_slices.task, wait_slices.tgid, wait_slices.dur,
                          wait_slices.args.map(lambda a: a["ino"]),
                          wait_slices.args.map(lambda a: a["bdi"]),
                          wait_slices.args.map(lambda a: a["ongoing"])))
    assert exported == expected
    assert all(name.startswith(args["path"]) and args["stack"]
               for name, args in zip(wait_slices.name, wait_slices.args))
    assert wait_slices.tid.notna().any()
    # requests: per connection, on lanes where slices never overlap
    requests = cap.table("requests")
    request_slices = slices[slices.args.map(lambda a: "unique" in a)]
    assert len(request_slices) == len(requests)
    assert sorted(request_slices.args.map(lambda a: a["unique"])) == sorted(requests.unique)
    assert sorted(request_slices.ts) == sorted(requests.send_ts_ns)
    for _, lane in request_slices.sort_values("ts").groupby("track"):
        assert (lane.ts.to_numpy()[1:] >= (lane.ts + lane.dur).to_numpy()[:-1]).all()
    # in-flight WRITEs agree with the analysis wherever no request is ongoing
    counters = got.counters.assign(name=[tracks[t]["name"] for t in got.counters.track])
    inflight = counters[counters.name.str.match(_WRITES_IN_FLIGHT)]
    ongoing = requests[requests.ongoing]
    horizon = ongoing.send_ts_ns.min() if len(ongoing) else np.inf
    settled = inflight[inflight.ts < horizon]
    if (requests.opcode_name == "WRITE").any():
        assert len(settled) > 0
        host = cap.hosts[0]
        assert (settled.value.to_numpy() == _writes_in_flight(requests, host, settled.ts)).all()
        pages = counters[counters.name.str.endswith("in flight (pages)")]
        assert pages.value.max() == np.ceil(pages.value.max())
    # dirty pages where throttled
    throttle = cap.table("throttle")
    dirty = counters[counters.name == "dirty + writeback pages (global, at throttling)"]
    assert dirty.value.tolist() == throttle.sort_values("ts_ns", kind="stable").dirty.tolist()



def _writes_in_flight(requests, host: str, times) -> np.ndarray:
    """WRITEs of ``host`` sent at or before each time and not yet answered, counted from the
    requests table alone (an end is end_ts_ns, else send + duration; ongoing never ends)."""
    writes = requests[(requests.host == host) & (requests.opcode_name == "WRITE")]
    ends = writes.end_ts_ns.astype("float64").fillna(
        (writes.send_ts_ns + writes.duration_ns).astype("float64")).to_numpy(copy=True)
    ends[writes.ongoing.to_numpy(dtype=bool)] = np.inf
    sends = writes.send_ts_ns.astype("float64").to_numpy()
    return np.array([int(((sends <= t) & (ends > t)).sum()) for t in np.asarray(times, "float64")])

def test_hand_made_capture_exports_every_event(tmp_path) -> None:
    capture = everything_capture(tmp_path / "cap")
    out = tmp_path / "cap.pftrace"
    done = export_perfetto(load_capture(capture), out)
    assert done.waits == len(pd.read_parquet(capture / "waits")) and done.tasks >= 3
    check_trace(capture, out)
    got = read_trace(out)
    ongoing = got.slices[got.slices.name.str.endswith("(ongoing)")]
    assert len(ongoing) >= 1  # the migration wait still asleep at the end
    assert (got.slices.ts >= START_NS).all()


def test_large_synthetic_capture_exports_every_event(tmp_path) -> None:
    capture = synthetic_capture(tmp_path / "syn", 5000, 5000, seed=3)
    out = tmp_path / "syn.pftrace"
    export_perfetto(load_capture(capture), out)
    check_trace(capture, out)


def test_in_flight_pages_count_write_bytes(tmp_path) -> None:
    capture = everything_capture(tmp_path / "cap")
    out = tmp_path / "cap.pftrace"
    export_perfetto(load_capture(capture), out)
    got = read_trace(out)
    names = {u: t["name"] for u, t in got.tracks.items()}
    # only requests of 1 ms or more have rows in this capture: the tracks say so
    assert "FUSE /mnt/fusewb WRITEs of 1 ms or more in flight" in names.values()
    counters = got.counters.assign(name=got.counters.track.map(names))
    count = counters[counters.name.str.match(_WRITES_IN_FLIGHT)].reset_index(drop=True)
    pages = counters[counters.name.str.endswith("in flight (pages)")].reset_index(drop=True)
    # every hand-made WRITE carries 64 KiB: 16 pages each
    assert (pages.value == count.value * (65536 // PAGE_BYTES)).all()


def test_cli_export_and_bad_input(tmp_path) -> None:
    capture = everything_capture(tmp_path / "cap")
    runner = CliRunner()
    done = runner.invoke(cli, ["export", str(capture), "--perfetto", "-o",
                               str(tmp_path / "t.pftrace")])
    assert done.exit_code == 0 and "open it in ui.perfetto.dev" in done.output, done.output
    check_trace(capture, tmp_path / "t.pftrace")
    for args, problem in [
        ([str(capture), "-o", str(tmp_path / "x")], "no export format given; add --perfetto"),
        ([str(tmp_path / "none"), "--perfetto", "-o", str(tmp_path / "x")], "does not exist"),
        ([str(capture), "--perfetto", "--host", "other", "-o", str(tmp_path / "x")],
         "has no host 'other'"),
        ([str(capture), "--perfetto", "-o", str(tmp_path / "no" / "x")], "cannot write"),
    ]:
        failed = subprocess.run([*FUSEWB, "export", *args], capture_output=True, text=True,
                                timeout=60)
        assert failed.returncode == 2 and problem in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr and len(failed.stderr.splitlines()) == 1


def test_several_hosts_need_host(tmp_path) -> None:
    everything_capture(tmp_path / "caps" / "a", host="a")
    everything_capture(tmp_path / "caps" / "b", host="b")
    done = CliRunner().invoke(cli, ["export", str(tmp_path / "caps"), "--perfetto", "-o",
                                    str(tmp_path / "x")])
    assert done.exit_code == 2 and "choose one with --host" in done.output
    done = CliRunner().invoke(cli, ["export", str(tmp_path / "caps"), "--perfetto", "--host", "b",
                                    "-o", str(tmp_path / "b.pftrace")])
    assert done.exit_code == 0, done.output
    assert "(host b)" in done.output


@pytest.mark.parametrize("field", ["waits", "requests"])
def test_capture_without_a_table_still_exports(tmp_path, field: str) -> None:
    capture = everything_capture(tmp_path / "cap")
    shutil.rmtree(capture / field)
    out = tmp_path / "t.pftrace"
    done = export_perfetto(load_capture(capture), out)
    assert getattr(done, field) == 0
    got = read_trace(out)
    key = "path" if field == "waits" else "unique"
    assert not got.slices.args.map(lambda a: key in a).any()
    assert len(got.slices) > 0
