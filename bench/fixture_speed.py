"""Part 4, the fixture's own cost: sequential write throughput of the pyfuse3 fixture against
Debian's bindfs (C, libfuse) on the same backing folder, 4 KiB and 1 MiB writes (fio).

bindfs has no writeback cache, so the like-for-like ratio is the fixture without it; the
fixture as the other parts use it (writeback cache on) is measured beside them. The baseline
is bindfs with ``-o big_writes`` (128 KiB WRITEs); plain bindfs (4 KiB WRITEs) runs beside it.
"""

from __future__ import annotations

from collections.abc import Callable

from fusewb.fixtures.manage import mount_fixture

from bench.stats import PartResult, Row, Spread, interleaved, paired_ratios
from bench.system import Settings, require_tools
from bench.workloads import MIB, bindfs_mount, fio_write, tmpfs_mount, write_requests

__all__ = ["run", "VARIANTS", "CASES"]

COUNT_MIB = 64
COUNT_SIZE = f"{COUNT_MIB}m"  # fio size of the runs that count WRITE requests

BASELINE = "bindfs -o big_writes"
PLAIN_BINDFS = "bindfs"
VARIANTS = [BASELINE, PLAIN_BINDFS, "fixture, no writeback cache", "fixture, writeback cache"]
# case -> (fio block size, size full, size quick)
CASES: dict[str, tuple[str, str, str]] = {
    "4 KiB writes": ("4k", "96m", "24m"),
    "1 MiB writes": ("1m", "384m", "128m"),
}


def run(settings: Settings, progress: Callable[[str], None]) -> PartResult:
    """Interleaved fio runs on the three mounts; throughput and ratio to bindfs."""
    require_tools("fio", "bindfs", "fusermount3")
    result = PartResult("fixture")
    mounts = {variant: settings.scratch(f"fixture-mnt-{i}") for i, variant in enumerate(VARIANTS)}
    samples: dict[tuple[str, str], list[float]] = {}
    request_sizes: list[str] = []
    with tmpfs_mount(settings.scratch("fixture-backing")) as backing, \
            bindfs_mount(backing, mounts[BASELINE], "-o", "big_writes") as big, \
            bindfs_mount(backing, mounts[PLAIN_BINDFS]) as bindfs, \
            mount_fixture(mounts[VARIANTS[2]], backing=backing, writeback_cache=False) as plain, \
            mount_fixture(mounts[VARIANTS[3]], backing=backing, writeback_cache=True) as cached:
        runs = list(interleaved(VARIANTS, settings.repetitions))
        for done, (rep, variant) in enumerate(runs, 1):
            for case, (block, full, quick) in CASES.items():
                mib_s = fio_write(str(mounts[variant]), block, quick if settings.quick else full)
                samples.setdefault((case, variant), []).append(mib_s)
            progress(f"fixture: repetition {rep + 1}/{settings.repetitions}, {variant} "
                     f"({done}/{len(runs)})")
        progress("fixture: WRITE request sizes (perf stat)")
        for variant, mount in zip(VARIANTS, (big, bindfs, plain.mount, cached.mount)):
            for case, (block, _, _) in CASES.items():
                count = write_requests(mount, block, COUNT_SIZE)
                average = f"{COUNT_MIB * MIB / count / 1024:.0f} KiB" if count else "not counted"
                request_sizes.append(f"{variant}, {case}: {count:,} WRITEs, {average} each")
    for case in CASES:
        base = samples[(case, BASELINE)]
        for variant in VARIANTS:
            values = samples[(case, variant)]
            result.rows.append(Row(
                part="fixture", case=case, variant=variant, unit="MiB/s",
                value=Spread.of(values),
                ratio=None if variant == BASELINE else Spread.of(paired_ratios(values, base)),
                ratio_to="" if variant == BASELINE else BASELINE,
            ))
    block_sizes = ", ".join(f"{case}: fio --bs={b} --size={q if settings.quick else f}"
                            for case, (b, f, q) in CASES.items())
    result.notes.append(
        "Method: one backing folder on a private tmpfs (fsync is free there, so the disk is out "
        "of the measurement), mounted four ways at once (bindfs with `-o big_writes`, the "
        "baseline; bindfs as Debian runs it by default, which sends 4 KiB WRITEs whatever "
        "the write size; the fixture `--backing` without and with writeback cache); each repetition runs fio "
        "(`--ioengine=psync --rw=write --end_fsync=1`) on every mount, order rotated per "
        f"repetition; {block_sizes}. Throughput is fio's (its runtime includes the final fsync).")
    result.notes.append(
        f"WRITE requests per {COUNT_MIB} MiB written (perf stat on fuse:fuse_request_send): "
        + "; ".join(request_sizes) + ". The throughput follows the request size: a server "
        "pays per request, so a mount that splits writes into small requests is bound by its "
        "per-request cost.")
    return result
