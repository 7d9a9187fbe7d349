"""The verdict of a report: what happened in a few sentences a person on call can paste into a
ticket, then what to do, built from the flags raised and their evidence.

:func:`verdict` reads only the plain report data (:func:`fusewb.analysis.report.build_report`),
so it is the same for every engine, plus the FUSE server threads the capture names
(:func:`server_names`). Per FUSE mount (host and bdi) with flags: the task that waited longest,
in which kernel path, for how long, then what its server did with the WRITEs (none answered,
the slowest answered after ...), then what the other flags add (the server waiting on itself,
migration, sync, reclaim, dirty throttling); flags about the whole host (an incomplete capture)
come last. A report without flags says so with the longest wait seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fusewb.analysis.capture import Capture
from fusewb.analysis.scanned import meta_server_threads

__all__ = ["verdict", "server_names", "human_ms", "ACTIONS", "WAIT_FLAGS", "MOUNTS_TOLD"]

# How a path reads in a sentence where its name alone would not.
_PATH_WORDS = {"other": "a kernel path fusewb does not name (see its stack)"}
MOUNTS_TOLD = 3  # on a capture of several hosts: the mounts told in full, worst first
# Flags raised on the waits of tasks (one task, one kernel path, one inode each).
WAIT_FLAGS = ("BLOCKED_WAIT", "RECLAIM_WAIT", "MIGRATION_WAIT", "SYNC_WAIT", "SERVER_SELF_WAIT")

# What to do per flag, in the order shown; ``{mount}``, ``{bdi}``, ``{connection}`` and
# ``{server}`` are filled in.
ACTIONS: dict[str, str] = {
    "SERVER_SELF_WAIT": "keep the server of {mount} from allocating memory while it answers "
    "WRITEs (preallocate, or run it in a memory cgroup of its own with headroom): it waits on "
    "writeback only it can end",
    "STALLED_REQUEST": "find why {server} takes so long to answer WRITEs on {mount} (`sudo "
    "fusewb stuck` while it happens shows its threads; py-spy/strace them); bound it with FUSE request "
    "timeouts (6.15+: echo 60 > /proc/sys/fs/fuse/default_request_timeout) or abort the "
    "connection (echo 1 > /sys/fs/fuse/connections/{connection}/abort: unwritten data is "
    "lost)",
    "BLOCKED_WAIT": "the waits last as long as the server of {mount} takes to answer a WRITE: "
    "make the server answer faster, or have the application write there asynchronously",
    "MIGRATION_WAIT": "avoid memory hot-unplug, CMA and proactive compaction on this host while "
    "the server of {mount} is slow (no kernel release avoids this wait yet)",
    "SYNC_WAIT": "this kernel waits on FUSE writeback in sync(2)/syncfs(2): take the kernel fix "
    "that skips the integrity wait for FUSE, or keep sync away from hosts with this mount",
    "RECLAIM_WAIT": "this kernel waits on FUSE writeback in reclaim (before 6.16): upgrade, or "
    "give the tasks writing to {mount} memory headroom",
    "RECLAIM_THROTTLE": "reclaim waited for writeback progress that the server of {mount} "
    "paces: give the cgroup memory headroom or make the server answer faster",
    "DIRTY_THROTTLE": "writers to {mount} are held to the bdi's share of the dirty limit: raise "
    "/sys/class/bdi/{bdi}/max_ratio (or clear strict_limit) if the server keeps up",
    "INCOMPLETE_CAPTURE": "counts are lower bounds: for lost events trace again with a larger "
    "ring buffer (fusewb trace --ring-pages), and stop the tracer with Ctrl-C or SIGTERM; probe "
    "runs the kernel skipped cannot be recovered, only counted",
}


def human_ms(ms: float | None) -> str:
    """``4263.2`` -> ``"4.26 s"``, ``120`` -> ``"120 ms"``, ``0.4`` -> ``"0.40 ms"``."""
    if ms is None:
        return "?"
    if ms >= 1000:
        return f"{ms / 1000:.3g} s" if ms < 100_000 else f"{ms / 1000:.0f} s"
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.2f} ms"


def server_names(cap: Capture) -> dict[tuple[str, str], list[str]]:
    """``(host, bdi) -> ["comm[tgid]", ...]``: the FUSE server processes the capture names in
    ``meta.json`` ``server_threads`` (one entry per process)."""
    out: dict[tuple[str, str], list[str]] = {}
    for host, bdi, tgid, comm in meta_server_threads(cap):
        names = out.setdefault((host, bdi), [])
        if f"{comm}[{tgid}]" not in names:
            names.append(f"{comm}[{tgid}]")
    return out


def _task(item: Mapping[str, Any]) -> str:
    return f"{item.get('comm') or '?'}[{item.get('pid')}]"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class _Mount:
    """One FUSE mount of one host as the verdict names it."""

    def __init__(self, host: str, bdi: str | None, mount: str | None, fstype: str | None,
                 connection: int | None, multi: bool) -> None:
        self.host, self.bdi, self.mount, self.fstype = host, bdi, mount, fstype
        self.connection = connection
        self.prefix = f"{host}: " if multi else ""

    @property
    def name(self) -> str:
        what = ", ".join(x for x in (self.fstype, f"bdi {self.bdi}" if self.bdi else None) if x)
        return f"{self.mount or '?'}" + (f" ({what})" if what else "")


def _mounts(report: Mapping[str, Any]) -> dict[tuple[str, str | None], _Mount]:
    multi = len(report["capture"]["hosts"]) > 1
    out: dict[tuple[str, str | None], _Mount] = {}
    for src in report["capture"]["sources"]:
        for m in src["mounts"]:
            key = (src["host"], m.get("bdi"))
            out.setdefault(key, _Mount(src["host"], m.get("bdi"), m.get("mountpoint"),
                                       m.get("fstype"), m.get("connection"), multi))
    for item in report["flags"]:
        key = (item["host"], item.get("bdi"))
        out.setdefault(key, _Mount(item["host"], item.get("bdi"), item.get("mount"), None, None,
                                   multi))
    return out


def _writes(report: Mapping[str, Any], host: str, bdi: str | None) -> Mapping[str, Any] | None:
    for row in report.get("requests_by_opcode") or []:
        if row["host"] == host and row.get("bdi") == bdi and row["opcode_name"] == "WRITE":
            return row
    return None


def _headline(m: _Mount, mine: list[Mapping[str, Any]]) -> str | None:
    """The task that waited longest on this mount, where and how long."""
    waits = [f for f in mine if f["flag"] in WAIT_FLAGS and f.get("pid") is not None
             and f.get("path")]
    if not waits:
        return None
    worst = max(waits, key=lambda f: f.get("duration_ms") or 0)
    inode = f" inode {worst['ino']} of" if worst.get("ino") is not None else ""
    path = _PATH_WORDS.get(worst["path"], worst["path"])
    if worst.get("ongoing"):
        text = (f"{m.prefix}{_task(worst)} was still waiting after "
                f"{human_ms(worst['duration_ms'])} in {path} on{inode} {m.name} when "
                "tracing stopped")
    else:
        text = (f"{m.prefix}{_task(worst)} waited {human_ms(worst['duration_ms'])} in "
                f"{path} on{inode} {m.name}")
    others = {(f.get("pid"), f.get("path")) for f in waits} - {(worst["pid"], worst["path"])}
    if others:
        paths = sorted({str(p) for _, p in others})
        text += f"; {_plural(len(others), 'other flagged wait')} ({', '.join(paths)})"
    return text


def _server(m: _Mount, mine: list[Mapping[str, Any]], report: Mapping[str, Any],
            servers: list[str]) -> str | None:
    """What the server did with the WRITEs of this mount."""
    stalled = [f for f in mine if f["flag"] == "STALLED_REQUEST"]
    writes = _writes(report, m.host, m.bdi)
    who = f"the server {', '.join(servers)}" if servers else "the server"
    if writes is not None and writes.get("ongoing"):
        n, k = int(writes["count"]), int(writes["ongoing"])
        if k >= n:
            return (f"{who} answered none of {_plural(n, 'WRITE')} for "
                    f"{human_ms(writes.get('max_ms'))}")
        return (f"{who} left {k} of {_plural(n, 'WRITE')} unanswered, for up to "
                f"{human_ms(writes.get('max_ms'))}")
    if stalled:
        worst = max(stalled, key=lambda f: f.get("duration_ms") or 0)
        n = int(writes["count"]) if writes is not None else int(worst.get("count") or 0)
        return (f"{who} answered the slowest of {_plural(n, 'WRITE')} after "
                f"{human_ms(worst.get('duration_ms'))}")
    if writes is not None and any(f["flag"] in WAIT_FLAGS for f in mine):
        return (f"{who} answered {_plural(int(writes['count']), 'WRITE')}, the slowest after "
                f"{human_ms(writes.get('max_ms'))}")
    return None


def _extra(m: _Mount, mine: list[Mapping[str, Any]]) -> list[str]:
    """What the other flags of this mount add, one sentence each (no full stop)."""
    out = []
    self_wait = [f for f in mine if f["flag"] == "SERVER_SELF_WAIT"]
    if self_wait:
        worst = max(self_wait, key=lambda f: f.get("duration_ms") or 0)
        how = ("was throttled in reclaim on writeback" if "throttled" in str(worst["evidence"])
               else f"waited on FUSE writeback in {worst.get('path') or '?'}")
        out.append(f"{m.prefix}A thread of the FUSE server itself, {_task(worst)}, {how} for "
                   f"{human_ms(worst.get('duration_ms'))} while its own WRITEs were in flight: "
                   "it waits on writeback only it can end (SERVER_SELF_WAIT)")
    for flag, what in (("MIGRATION_WAIT", "memory migration or compaction"),
                       ("SYNC_WAIT", "sync(2)/syncfs(2)"),
                       ("RECLAIM_WAIT", "memory reclaim")):
        hit = [f for f in mine if f["flag"] == flag]
        if hit:
            worst = max(hit, key=lambda f: f.get("duration_ms") or 0)
            out.append(f"{m.prefix}In {what}, {_task(worst)} waited "
                       f"{human_ms(worst.get('duration_ms'))} on this mount's writeback ({flag})")
    throttled = [f for f in mine if f["flag"] == "RECLAIM_THROTTLE"]
    if throttled:
        total = sum(f.get("total_ms") or 0 for f in throttled)
        out.append(f"{m.prefix}Reclaim was throttled on writeback for {human_ms(total)} in total "
                   f"({_plural(len(throttled), 'task')}) while WRITEs to {m.mount or '?'} were "
                   "in flight (RECLAIM_THROTTLE)")
    dirty = [f for f in mine if f["flag"] == "DIRTY_THROTTLE"]
    if dirty:
        total = sum(f.get("total_ms") or 0 for f in dirty)
        worst = max(dirty, key=lambda f: f.get("total_ms") or 0)
        out.append(f"{m.prefix}Writers to {m.mount or '?'} were paused by balance_dirty_pages "
                   f"for {human_ms(total)} in total ({_task(worst)} the most; DIRTY_THROTTLE)")
    return out


def _quiet(report: Mapping[str, Any]) -> str:
    """The sentence of a report without flags."""
    paths = report.get("waits_by_path") or []
    count = sum(int(r.get("count") or 0) for r in paths)
    threshold = human_ms(report["threshold_ms"])
    if not count:
        return f"No task waited on FUSE writeback and no FUSE WRITE took {threshold} or more."
    worst = max(paths, key=lambda r: r.get("max_ms") or 0)
    return (f"No task waited on FUSE writeback for {threshold} or more: "
            f"{_plural(count, 'wait')} in all, the longest {human_ms(worst.get('max_ms'))} in "
            f"{worst['path']}.")


def _flag_spread(report: Mapping[str, Any]) -> str:
    """``BLOCKED_WAIT on 4 hosts, SYNC_WAIT on 1 host``: each flag kind and on how many hosts."""
    hosts: dict[str, set[str]] = {}
    for item in report["flags"]:
        hosts.setdefault(item["flag"], set()).add(item["host"])
    return ", ".join(f"{flag} on {_plural(len(h), 'host')}" for flag, h in hosts.items())


def verdict(report: Mapping[str, Any],
            servers: Mapping[tuple[str, str], list[str]] | None = None) -> dict[str, Any]:
    """The verdict of ``report`` (plain report data): ``sentences`` (what happened, worst mount
    first, each ending in a full stop), ``actions`` (what to do, one per flag kind raised, with
    the hosts it applies to on a capture of several) and ``text`` (the sentences as one
    paragraph). On a capture of several hosts only the :data:`MOUNTS_TOLD` worst mounts are
    told, then which flags the hosts raised.
    ``servers``: :func:`server_names`."""
    servers = servers or {}
    mounts = _mounts(report)
    multi = len(report["capture"]["hosts"]) > 1
    order: list[tuple[str, str | None]] = []
    for item in report["flags"]:  # worst first
        key = (item["host"], item.get("bdi"))
        if item["flag"] != "INCOMPLETE_CAPTURE" and key not in order:
            order.append(key)
    told = order[:MOUNTS_TOLD] if multi else order
    sentences: list[str] = []
    actions: dict[str, list[str]] = {}  # what to do -> the hosts it applies to
    for key in order:
        m = mounts[key]
        mine = [f for f in report["flags"] if (f["host"], f.get("bdi")) == key]
        names = servers.get((m.host, m.bdi or ""), [])
        if key in told:
            head, server = _headline(m, mine), _server(m, mine, report, names)
            named = [f for f in ("BLOCKED_WAIT", "STALLED_REQUEST")
                     if any(x["flag"] == f for x in mine)]
            said = f" ({', '.join(named)})" if named else ""
            if head and server:
                sentences.append(f"{head}: {server}{said}.")
            elif head or server:
                sentences.append(f"{head or f'{m.prefix}On {m.name}, {server}'}{said}.")
            if not multi:
                sentences.extend(f"{sentence}." for sentence in _extra(m, mine))
        raised = {f["flag"] for f in mine}
        if "STALLED_REQUEST" in raised:  # its action says what BLOCKED_WAIT's would
            raised.discard("BLOCKED_WAIT")
        for flag, action in ACTIONS.items():
            if flag in raised:
                text = action.format(mount=m.mount or "?", bdi=m.bdi or "?",
                                     connection=m.connection if m.connection is not None
                                     else "N", server=", ".join(names) or "the server")
                actions.setdefault(text, []).append(m.host)
    if multi and report["flags"]:
        flagged = {item["host"] for item in report["flags"]}
        sentences.append(f"{len(flagged)} of {len(report['capture']['hosts'])} hosts raised "
                         f"flags: {_flag_spread(report)} (the hosts table has each one's "
                         "worst).")
    incomplete = [item for item in report["flags"] if item["flag"] == "INCOMPLETE_CAPTURE"]
    if incomplete and not multi:
        sentences.append(f"The capture is incomplete ({incomplete[0]['evidence']}).")
    elif incomplete:
        sentences.append(f"The captures of {', '.join(i['host'] for i in incomplete)} are "
                         f"incomplete ({incomplete[0]['host']}: {incomplete[0]['evidence']}).")
    for item in incomplete:
        actions.setdefault(ACTIONS["INCOMPLETE_CAPTURE"], []).append(item["host"])
    if not sentences:
        sentences.append(_quiet(report))
    return {"sentences": sentences,
            "actions": [f"{', '.join(dict.fromkeys(hosts))}: {text}" if multi else text
                        for text, hosts in actions.items()],
            "text": " ".join(sentences)}
