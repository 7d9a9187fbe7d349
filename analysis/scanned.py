"""What a scan hands the flags (:class:`Scan`), and the inputs it takes from the capture besides
the flags' own rows: the FUSE server threads, the waits begun before tracing, the times reclaim
was throttled on writeback and the WRITEs in flight then. Below both the scan engines
(:mod:`fusewb.analysis.scan`, which read the flag declarations) and the declarations
(:mod:`fusewb.analysis.findings`, whose rules read a scan), so the declarations never import
the scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture
from fusewb.analysis.partials import inflight_partial
from fusewb.analysis.requests import WRITE
from fusewb.analysis.vm import VMSCAN_THROTTLE_WRITEBACK, vm_events
from fusewb.analysis.waiting import unseen_waits
from fusewb.contract.defaults import KERNEL_ENDED_ERRORS

__all__ = ["Scan", "answered_partial", "meta_server_threads", "server_tgids", "unseen_fuse_waits",
           "throttled_on_writeback", "throttle_times", "inflight_writes_partial"]


@dataclass
class Scan:
    """The merged partials of a capture's big tables, with what was read of them.

    ``wait_paths`` and ``by_opcode`` are :func:`wait_paths` and :func:`requests_by_opcode`;
    ``flag_rows`` (flag -> merged worst rows of each flag that selects rows of a big table),
    ``servers`` and ``inflight`` feed :func:`flags`; ``rows`` counts the rows read per
    (host, table) and ``damage`` names the parts skipped per host; ``worker_peak_rss`` (Dask
    only): worker -> peak RSS bytes.
    """

    wait_paths: pd.DataFrame
    flag_rows: dict[str, pd.DataFrame]
    by_opcode: pd.DataFrame
    servers: set[tuple[str, str, int]]
    inflight: dict[str, list[tuple[str, np.ndarray]]]
    rows: dict[tuple[str, str], int]
    damage: dict[str, list[str]]
    worker_peak_rss: dict[str, int] = field(default_factory=dict)


# --- FUSE servers and waits begun before tracing ---------------------------------------------

def answered_partial(r: pd.DataFrame) -> pd.DataFrame:
    """host, bdi, end_tgid of the server threads that answered requests of a slice of
    :func:`fuse_requests` rows (merge with :func:`server_tgids`)."""
    if r.empty:
        return pd.DataFrame(columns=["host", "bdi", "end_tgid"])
    # requests ended by an abort or a dead connection end in the aborter's context
    answered = ~r["error"].isin(KERNEL_ENDED_ERRORS)
    return r.loc[answered, ["host", "bdi", "end_tgid"]].dropna().drop_duplicates()


def meta_server_threads(cap: Capture) -> list[tuple[str, str, int, str]]:
    """``(host, bdi, tgid, comm)`` of each FUSE server thread ``meta.json`` ``server_threads``
    names, its bdi taken from its connection's mount where the entry has none."""
    bdi_of_connection = {
        (r.host, int(r.connection)): str(r.bdi)
        for r in cap.mounts().itertuples(index=False)
        if r.connection is not None and r.bdi is not None
    }
    found: list[tuple[str, str, int, str]] = []
    for src in cap.sources:
        for thread in src.meta.get("server_threads") or []:
            if not isinstance(thread, dict) or thread.get("tgid") is None:
                continue
            bdi = thread.get("bdi")
            if bdi is None and thread.get("connection") is not None:
                bdi = bdi_of_connection.get((src.host, int(thread["connection"])))
            if bdi is not None:
                found.append((src.host, str(bdi), int(thread["tgid"]), str(thread.get("comm") or "?")))
    return found


def server_tgids(cap: Capture, answered: list[pd.DataFrame]) -> set[tuple[str, str, int]]:
    """``(host, bdi, tgid)`` of every FUSE server thread: from meta
    (:func:`meta_server_threads`) and from the :func:`answered_partial` frames of the requests."""
    found = {(host, bdi, tgid) for host, bdi, tgid, _comm in meta_server_threads(cap)}
    for replies in answered:
        found.update(
            (str(h), str(b), int(t))
            for h, b, t in zip(replies["host"], replies["bdi"], replies["end_tgid"])
        )
    return found


def unseen_fuse_waits(cap: Capture) -> pd.DataFrame:
    """Waits begun before tracing (from /proc) with a FUSE frame, shaped like ``waits``; their
    bdi and mount are unknown (None). The wait flags count them after every traced wait."""
    unseen = unseen_waits(cap)
    unseen = unseen[unseen["fuse"]]
    return pd.DataFrame({
        "host": unseen["host"].astype(object), "path": unseen["path"].astype(object),
        "bdi": None, "mount": None, "pid": unseen["pid"], "tgid": unseen["tgid"],
        "comm": unseen["comm"], "ino": pd.array([None] * len(unseen), dtype="Int64"),
        "duration_ms": unseen["duration_ms"].fillna(0.0),
        "duration_ns": [_unseen_ns(cap, str(h)) for h in unseen["host"].astype(object)],
        "ongoing": True, "t_s": 0.0,
        "stack": "asleep since before tracing began (bdi unknown, from /proc): "
        + unseen["stack"].astype(str),
    })


def _unseen_ns(cap: Capture, host: str) -> int:
    src = cap.source(host)
    return src.end_ns - src.start_ns if src.end_ns else 0


# --- reclaim throttled on writeback -------------------------------------------------------

def throttled_on_writeback(cap: Capture) -> pd.DataFrame:
    """The ``vm_events`` of reclaim throttled on writeback (``vmscan_throttled`` with the
    WRITEBACK reason)."""
    vm = vm_events(cap)
    on_writeback = (vm["reason"].fillna(0).astype(np.int64) & VMSCAN_THROTTLE_WRITEBACK) > 0
    return vm[(vm["kind"] == "vmscan_throttled") & on_writeback]


def throttle_times(cap: Capture) -> dict[str, np.ndarray]:
    """host -> times of reclaim throttled on writeback (RECLAIM_THROTTLE checks the WRITEs in
    flight then, with :func:`inflight_partial`); empty without vm events."""
    if not cap.recorded("vm"):
        return {}
    throttled = throttled_on_writeback(cap)
    return {str(host): rows["ts_ns"].to_numpy(dtype=np.int64)
            for host, rows in throttled.groupby("host", observed=True, sort=False)}


def inflight_writes_partial(r: pd.DataFrame, times: dict[str, np.ndarray]) -> pd.DataFrame:
    """RECLAIM_THROTTLE's partial of a slice of :func:`fuse_requests` rows with order columns:
    WRITEs sent and ended by each throttle time; merge with :func:`combine_inflight`."""
    return inflight_partial(r[r["opcode_name"] == WRITE] if len(r) else r, times)
