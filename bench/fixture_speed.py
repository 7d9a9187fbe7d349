"""Part 4, the fixture's own cost: sequential write throughput of the pyfuse3 fixture against
Debian's bindfs (C, libfuse) on the same backing folder, 4 KiB and 1 MiB writes (fio).

bindfs has no writeback cache, so the like-for-like ratio is the fixture without it; the
fixture as the other parts use it (writeback cache on) is measured beside them.
"""

from __future__ import annotations

from collections.abc import Callable

from fusewb.fixtures.manage import mount_fixture

from bench.stats import PartResult, Row, Spread, interleaved, paired_ratios
from bench.system import Settings, require_tools
from bench.workloads import bindfs_mount, fio_write

__all__ = ["run", "VARIANTS", "CASES"]

BASELINE = "bindfs"
VARIANTS = [BASELINE, "fixture, no writeback cache", "fixture, writeback cache"]
# case -> (fio block size, size full, size quick)
CASES: dict[str, tuple[str, str, str]] = {
    "4 KiB writes": ("4k", "96m", "24m"),
    "1 MiB writes": ("1m", "512m", "128m"),
}


def run(settings: Settings, progress: Callable[[str], None]) -> PartResult:
    """Interleaved fio runs on the three mounts; throughput and ratio to bindfs."""
    require_tools("fio", "bindfs", "fusermount3")
    result = PartResult("fixture")
    backing = settings.scratch("fixture-backing")
    mounts = {variant: settings.scratch(f"fixture-mnt-{i}") for i, variant in enumerate(VARIANTS)}
    samples: dict[tuple[str, str], list[float]] = {}
    with bindfs_mount(backing, mounts[BASELINE]), \
            mount_fixture(mounts[VARIANTS[1]], backing=backing, writeback_cache=False), \
            mount_fixture(mounts[VARIANTS[2]], backing=backing, writeback_cache=True):
        runs = list(interleaved(VARIANTS, settings.repetitions))
        for done, (rep, variant) in enumerate(runs, 1):
            for case, (block, full, quick) in CASES.items():
                mib_s = fio_write(str(mounts[variant]), block, quick if settings.quick else full)
                samples.setdefault((case, variant), []).append(mib_s)
            progress(f"fixture: repetition {rep + 1}/{settings.repetitions}, {variant} "
                     f"({done}/{len(runs)})")
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
        "Method: one backing folder, mounted three ways at once (bindfs; fixture "
        "`--backing` without and with writeback cache); each repetition runs fio "
        "(`--ioengine=psync --rw=write --end_fsync=1`) on every mount, order rotated per "
        f"repetition; {block_sizes}. Throughput is fio's (its runtime includes the final fsync).")
    return result
