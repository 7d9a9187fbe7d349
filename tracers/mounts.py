"""FUSE mounts of this machine and the kernel objects behind them: bdi, fusectl connection.

A FUSE mount's bdi is named ``MAJOR:MINOR`` of its ``st_dev`` (``MAJOR:MINOR-fuseblk`` for
fuseblk); its fusectl connection directory and the ``connection`` field of the ``fuse:``
tracepoints carry the kernel's ``dev_t`` encoding, ``MAJOR << 20 | MINOR``.
"""

from __future__ import annotations

import os
import select
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["FuseMount", "MountTableWatch", "fuse_mounts", "fuse_mounts_by_id", "mount_for_path",
           "mountpoint_path", "kernel_dev", "bdi_sysfs_value", "fusectl_mounted"]

MOUNTINFO = Path("/proc/self/mountinfo")
BDI_SYSFS = Path("/sys/class/bdi")
FUSECTL = Path("/sys/fs/fuse/connections")


def kernel_dev(major: int, minor: int) -> int:
    """The kernel's internal ``dev_t`` (``MKDEV``), as in fusectl names and fuse: tracepoints."""
    return (major << 20) | minor


def bdi_sysfs_value(bdi: str, name: str) -> str | None:
    """A value from ``/sys/class/bdi/<bdi>/<name>`` (``max_ratio``, ``strict_limit``...), or None."""
    try:
        return (BDI_SYSFS / bdi / name).read_text().strip()
    except OSError:
        return None


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


@dataclass(frozen=True)
class FuseMount:
    """One FUSE mount: where, what, and the bdi/connection the kernel tracks it under."""

    mountpoint: str
    fstype: str
    source: str
    major: int
    minor: int

    @property
    def bdi(self) -> str:
        suffix = "-fuseblk" if self.fstype.startswith("fuseblk") else ""
        return f"{self.major}:{self.minor}{suffix}"

    @property
    def connection(self) -> int:
        return kernel_dev(self.major, self.minor)

    @property
    def fusectl_dir(self) -> Path:
        return FUSECTL / str(self.connection)

    def as_dict(self) -> dict:
        """The record stored in a capture's ``meta.json``."""
        out = asdict(self)
        out.update(
            bdi=self.bdi,
            connection=self.connection,
            max_ratio=bdi_sysfs_value(self.bdi, "max_ratio"),
            strict_limit=bdi_sysfs_value(self.bdi, "strict_limit"),
        )
        return out


def fuse_mounts_by_id(mountinfo: Path = MOUNTINFO) -> dict[int, FuseMount]:
    """Every fuse/fuseblk mount in ``mountinfo`` (any subtype, e.g. ``fuse.bindfs``) by its mount
    ID (the ``mnt_id`` of ``/proc/PID/fdinfo``)."""
    mounts = {}
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        fstype = tail[0]
        if fstype.split(".", 1)[0] not in ("fuse", "fuseblk"):
            continue
        major, minor = (int(x) for x in fields[2].split(":"))
        mounts[int(fields[0])] = FuseMount(_unescape(fields[4]), fstype, _unescape(tail[1]),
                                           major, minor)
    return mounts


def fuse_mounts(mountinfo: Path = MOUNTINFO) -> list[FuseMount]:
    """Every fuse/fuseblk mount in ``mountinfo`` (any subtype, e.g. ``fuse.bindfs``)."""
    return list(fuse_mounts_by_id(mountinfo).values())


def fusectl_mounted(where: Path = FUSECTL) -> bool:
    """Whether fusectl is mounted on ``where`` in this mount namespace."""
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1:3] == [str(where), "fusectl"] for line in mounts)


def mountpoint_path(path: str | os.PathLike) -> str:
    """The real path of a mountpoint without touching the mount itself.

    Only the parent folder is resolved: ``os.path.realpath(path)`` would stat the FUSE root,
    which blocks behind a stalled single-threaded server."""
    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute)
    return os.path.join(os.path.realpath(parent), name) if name else absolute


def mount_for_path(path: str | os.PathLike) -> FuseMount | None:
    """The FUSE mount whose mountpoint is ``path``, or None (never touches the mount)."""
    want = mountpoint_path(path)
    for mount in fuse_mounts():
        if mount.mountpoint == want:
            return mount
    return None


class MountTableWatch:
    """Whether this process's mount table changed since the last call: ``poll(2)`` on
    ``/proc/self/mountinfo`` reports each mount or unmount as POLLPRI (proc(5)), so a caller
    re-reads the table only then instead of on every poll. The first call reports a change."""

    def __init__(self, mountinfo: Path = MOUNTINFO) -> None:
        self._file = open(mountinfo, "rb")  # noqa: SIM115 - held open for poll(2); close()
        self._poller = select.poll()
        self._poller.register(self._file, select.POLLPRI | select.POLLERR)
        self._first = True

    def changed(self) -> bool:
        first, self._first = self._first, False
        return bool(self._poller.poll(0)) or first

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "MountTableWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
