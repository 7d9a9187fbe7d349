"""The kernel matrix of ``make test``: which kernel generations the guest stage boots, and
fetching each from Debian's archive.

Debian 12's own 6.1 comes from ``linux-image-amd64`` in /boot (``make setup``). The others are
taken from Debian's archive without installing them (their dependencies are newer Debian
releases'): an apt state of our own under the cache folder with a sources list naming the
suites below (the machine's own sources stay as they are), the newest release of each series
picked from the archive's index, ``apt-get download`` of the image package and, from 7.0 on,
the ``linux-binary``/``linux-modules``/``linux-base`` packages it depends on, ``dpkg-deb -x``,
and the modules copied to /usr/lib/modules/<release> with ``depmod`` so virtme-ng can boot it
with this machine's userspace. A second run reuses the index for a day and every extracted
kernel, so it returns in about a second.

    python -m fusewb.kernels fetch      # what make setup runs
    python -m fusewb.kernels list       # the matrix and what is on this machine
    python -m fusewb.kernels table      # README's scenario x kernel table from the guest results
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
from fusewb.command import Command
from fusewb.tracers.headers import cache_root

__all__ = ["Series", "MATRIX", "Kernel", "matrix_kernels", "release_of_image", "fetch", "release_key", "series_of",
           "kernel_table", "main"]

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ARCHIVE = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
INDEX_MAX_AGE_S = 24 * 3600
MODULES = Path("/usr/lib/modules")


@dataclass(frozen=True)
class Series:
    """One kernel generation of the matrix.

    ``suites``: the archive suites that carry it (empty: the /boot image ``make setup``
    installs); ``package``: a regular expression of the image package, its group ``release``
    the kernel release; ``role``: ``full`` (every guest-marked test) or ``conformance`` (the
    conformance subset, tests/conftest.py); ``why``: what this generation stands for."""

    name: str
    suites: tuple[str, ...]
    package: str
    role: str
    why: str
    # scenarios `fusewb run` leaves out in this series' guest, and why (the guest environment)
    scenarios_held: tuple[str, ...] = ()
    held_why: str | None = None


HELD_WITHOUT_MEMCG_V1 = ("self-wait",)
NO_MEMCG_V1 = ("Debian builds this kernel without the v1 memory controller (CONFIG_MEMCG_V1 unset), so its "
               "guest keeps cgroup v2, where the self-wait load limits the cgroup with memory.high: that "
               "throttles the server over the limit instead of taking it into reclaim_throttle behind its "
               "own WRITEs (7.3.4 guest, 2026-12-04: SERVER_SELF_WAIT and RECLAIM_THROTTLE missing)")


MATRIX: tuple[Series, ...] = (
    Series("5.10", ("bullseye", "bullseye-security"), r"linux-image-(?P<release>5\.10\.0-\d+-amd64)",
           "conformance", "Debian 11: fuse a module without module BTF, temp pages, "
           "writeback:wait_on_page_writeback"),
    Series("6.1", (), r"(?P<release>6\.1\.0-\d+-amd64)", "full",
           "Debian 12: temp pages, no fuse tracepoints"),
    Series("6.12", ("trixie",), r"linux-image-(?P<release>6\.12\.\d+\+deb\d+-amd64)", "conformance",
           "Debian 13: temp pages, fuse tracepoints with the send before unique is assigned"),
    Series("6.17", ("trixie-backports",), r"linux-image-(?P<release>6\.17\.\d+\+deb\d+-amd64)",
           "conformance", "no temp pages, iomap writeback, the early send", HELD_WITHOUT_MEMCG_V1, NO_MEMCG_V1),
    Series("7.x", ("trixie-backports", "sid"), r"linux-image-(?P<release>7\.\d+\.\d+\+deb\d+-amd64)",
           "full", "the newest in the archive", HELD_WITHOUT_MEMCG_V1, NO_MEMCG_V1),
)


ARCHIVE_SERIES = tuple(series for series in MATRIX if series.suites)  # fetched from the archive


@dataclass(frozen=True)
class Kernel:
    """A kernel of the matrix on this machine: its series, release and image to boot."""

    series: Series
    release: str
    image: Path

    @property
    def role(self) -> str:
        return self.series.role


def series_of(release: str) -> Series | None:
    """The matrix series a kernel release belongs to."""
    for series in MATRIX:
        if re.fullmatch(series.package, release) or re.fullmatch(series.package, f"linux-image-{release}"):
            return series
    return None


def release_key(release: str) -> tuple[int, ...]:
    """Sort key of a release: its numbers in order (7.3.4+deb13 after 7.2.13+deb14)."""
    head = re.split(r"[+-]?deb|-amd64", release)[0]
    return tuple(int(n) for n in re.findall(r"\d+", head))


def _root() -> Path:
    return cache_root() / "kernels"


def _apt_options(root: Path) -> list[str]:
    return ["-o", f"Dir::State={root / 'apt-state'}", "-o", f"Dir::Cache={root / 'apt-cache'}",
            "-o", f"Dir::Etc::SourceList={root / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", "Debug::NoLocking=1"]


SUITES = sorted({suite for series in MATRIX for suite in series.suites})


def _sources() -> str:
    lines = []
    for suite in SUITES:
        base = SECURITY if suite.endswith("-security") else ARCHIVE
        lines.append(f"deb [signed-by={KEYRING}] {base} {suite} main")
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], what: str, timeout: float = 900, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise click.ClickException(f"{what}: no answer in {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise click.ClickException(f"{what} failed: {tail[0]}")
    return done.stdout


def _update_index(root: Path, echo) -> bool:
    """The archive's index for the matrix suites, refreshed when older than a day; whether it
    was refreshed now."""
    for sub in ("apt-state/lists/partial", "apt-cache/archives/partial"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    sources = root / "sources.list"
    stamp = root / "index-updated"
    fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < INDEX_MAX_AGE_S
    if fresh and sources.exists() and sources.read_text() == _sources():
        return False
    sources.write_text(_sources())
    echo(f"fusewb kernels: reading the archive's index ({', '.join(SUITES)})")
    _run(["apt-get", *_apt_options(root), "-q", "update"], "apt-get update of the kernel suites")
    stamp.touch()
    return True


def _available(root: Path) -> dict[str, dict[str, str]]:
    """Real packages in the index: name -> {Version, Depends}."""
    text = _run(["apt-cache", *_apt_options(root), "dumpavail"], "apt-cache dumpavail", timeout=120)
    found: dict[str, dict[str, str]] = {}
    for record in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in record.splitlines() if ": " in line and line[0] != " ")
        if "Package" in fields and fields["Package"].startswith(("linux-image-", "linux-binary-",
                                                                  "linux-modules-", "linux-base-")):
            found[fields["Package"]] = fields
    return found


def _newest(series: Series, packages: dict[str, dict[str, str]]) -> tuple[str, str] | None:
    """(image package, release) of the series' newest release in the index."""
    matches = [(m["release"], name) for name in packages
               if (m := re.fullmatch(series.package, name))]
    if not matches:
        return None
    release, name = max(matches, key=lambda rn: release_key(rn[0]))
    return name, release


def _image_in(tree: Path, release: str) -> Path | None:
    for candidate in (tree / "boot" / f"vmlinuz-{release}", tree / "usr/lib/modules" / release / "vmlinuz",
                      tree / "lib/modules" / release / "vmlinuz"):
        if candidate.exists():
            return candidate
    return None


def _extract(root: Path, image_package: str, release: str, packages: dict[str, dict[str, str]], echo) -> Path:
    """Download and unpack one kernel; install its modules for virtme-ng. Returns the image."""
    tree = root / release
    ready = tree / "fusewb-ready"
    if ready.exists():
        return Path(ready.read_text().strip())
    depends = packages[image_package].get("Depends", "")
    names = [image_package] + sorted({d.split()[0] for d in re.split(r"[,|]", depends)
                                      if release in d and d.split()[0] in packages})
    echo(f"fusewb kernels: downloading {', '.join(names)}")
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        _run(["apt-get", *_apt_options(root), "-q", "download", *names], f"apt-get download of {release}",
             cwd=Path(tmp))
        staging = Path(tmp) / "tree"
        for deb in sorted(Path(tmp).glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(staging)], f"dpkg-deb -x {deb.name}")
        if tree.exists():
            shutil.rmtree(tree)
        staging.rename(tree)
    image = _image_in(tree, release)
    if image is None:
        raise click.ClickException(f"no vmlinuz in the packages of {release}: its packaging changed; "
                                   f"see 'python -m fusewb.kernels --help'")
    for modules in (tree / "usr/lib/modules" / release, tree / "lib/modules" / release):
        if modules.is_dir():
            dest = MODULES / release
            echo(f"fusewb kernels: installing the modules of {release} in {dest}")
            shutil.copytree(modules, dest, symlinks=True, dirs_exist_ok=True)
            break
    else:
        raise click.ClickException(f"no modules folder in the packages of {release}")
    _run(["depmod", release], f"depmod {release}")
    ready.write_text(f"{image}\n")
    return image


def release_of_image(image: Path) -> str:
    """The kernel release of an image: /boot/vmlinuz-<release>, or .../modules/<release>/vmlinuz
    (7.0+ packaging)."""
    return image.parent.name if image.name == "vmlinuz" else image.name.removeprefix("vmlinuz-")


def matrix_kernels(boot: Path = Path("/boot")) -> list[Kernel]:
    """The matrix kernels present on this machine (fetched or in /boot), in matrix order, the
    newest of each series; the running kernel is never among them. /boot serves the series
    without suites, the cache the others."""
    running = os.uname().release
    images = [image for image in boot.glob("vmlinuz-*")]
    fetched = _root()
    if fetched.is_dir():
        images += [Path(ready.read_text().strip()) for ready in fetched.glob("*/fusewb-ready")]
    newest: dict[str, Kernel] = {}
    for image in images:
        release = release_of_image(image)
        series = series_of(release)
        from_boot = image.parent == boot
        if series is None or release == running or from_boot == bool(series.suites) or not image.exists():
            continue
        if series.name not in newest or release_key(release) > release_key(newest[series.name].release):
            newest[series.name] = Kernel(series, release, image)
    return [newest[s.name] for s in MATRIX if s.name in newest]


def fetch(echo=print) -> list[str]:
    """Fetch every archive series' newest release not yet here. Returns the problems (one line
    each; empty when every series is here)."""
    root = _root()
    root.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    chosen_file = root / "newest.json"  # series -> [image package, release], as read from the index
    try:
        refreshed = _update_index(root, echo)
        chosen = {} if refreshed or not chosen_file.exists() else json.loads(chosen_file.read_text())
        if len(chosen) == len(ARCHIVE_SERIES) and all((root / rel / "fusewb-ready").exists() for _, rel in chosen.values()):
            return problems  # the index did not change and its newest of each series is here
        packages = _available(root)
        chosen = {s.name: newest for s in ARCHIVE_SERIES if (newest := _newest(s, packages))}
        chosen_file.write_text(json.dumps(chosen))
    except click.ClickException as exc:
        packages, chosen = {}, {}
        problems.append(f"{exc.message} (the archive cannot be reached: kernels fetched before are used)")
    have = {k.series.name for k in matrix_kernels()}
    for series in ARCHIVE_SERIES:
        newest = chosen.get(series.name)
        if newest is None:
            if series.name not in have:
                problems.append(f"kernel {series.name}: not in the index of {', '.join(series.suites)}")
            continue
        try:
            _extract(root, newest[0], newest[1], packages, echo)
        except click.ClickException as exc:
            problems.append(f"kernel {series.name}: {exc.message}")
    return problems


TABLE_BEGIN = "<!-- kernel-table: generated by 'python -m fusewb.kernels table' (make test) from the guest results -->"
TABLE_END = "<!-- /kernel-table -->"


def _cell(outcome: dict) -> str:
    """One scenario on one kernel: where it waited and for how long, the flags, the verdict."""
    waits = sorted(outcome.get("waits") or [], key=lambda w: -w["max_ms"])
    where = "; ".join(f"{w['path']} x{w['count']}, max {w['max_ms']:.0f} ms" for w in waits[:2]) or "no wait"
    flags = ", ".join(outcome.get("flags") or []) or "no flag"
    if outcome.get("not_checked"):
        flags += " (" + ", ".join(outcome["not_checked"]) + " not checked here)"
    lacking = [*(outcome.get("missing") or []), *(repr(p) for p in outcome.get("verdict_missing") or [])]
    mark = "" if outcome.get("ok") else "**NOT as expected** (missing " + ", ".join(lacking) + "): "
    return f"{mark}{where}; {flags}"


def kernel_table(results: Path) -> str:
    """README's table: a row per scenario, a column per kernel of the matrix (in matrix order),
    each cell from that kernel's ``results-<release>.json`` (``fusewb run all --results``)."""
    docs: dict[str, dict] = {}
    for path in sorted(results.glob("results-*.json")):
        doc = json.loads(path.read_text())
        series = series_of(doc["kernel_release"])
        if series is not None:
            docs[series.name] = doc
    columns = [(s, docs.get(s.name)) for s in MATRIX]
    head = ["scenario"] + [f"{s.name}: {d['kernel_release']}" if d else f"{s.name}: not run" for s, d in columns]
    names: list[str] = []
    for _series, doc in columns:
        for outcome in (doc or {}).get("scenarios", []):
            if outcome["scenario"] not in names:
                names.append(outcome["scenario"])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name in names:
        cells = [f"`{name}`"]
        for series, doc in columns:
            found = [o for o in (doc or {}).get("scenarios", []) if o["scenario"] == name]
            held = name in series.scenarios_held
            cells.append(_cell(found[0]) if found else "held back in this guest (below)" if held else "not run")
        lines.append("| " + " | ".join(cells) + " |")
    pages = {s.name: ("temp pages" if d["temp_pages"] else "no temp pages") for s, d in columns if d}
    for series, _doc in columns:
        if series.scenarios_held:
            lines.append("")
            lines.append(f"{series.name}: {', '.join(series.scenarios_held)} not run in its guest: {series.held_why}.")
    lines.append("")
    lines.append("Each cell: the kernel paths the fixture's writers waited in (count, longest wait), then the "
                 "flags raised on the fixture's bdi."
                 + (" " + "; ".join(f"{k}: {v}" for k, v in pages.items()) + "." if pages else ""))
    return "\n".join(lines)


def _replace_table(readme: Path, table: str) -> None:
    text = readme.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise click.ClickException(f"{readme} has no kernel table markers; put {TABLE_BEGIN!r} and "
                                   f"{TABLE_END!r} where the table goes")
    head, rest = text.split(TABLE_BEGIN, 1)
    _old, tail = rest.split(TABLE_END, 1)
    readme.write_text(f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The kernel matrix the guest stage of make test boots.

    \b
    Examples:
      python -m fusewb.kernels fetch
      python -m fusewb.kernels list --json
      python -m fusewb.kernels table --results build/test-results --readme README.md
    """


@main.command("fetch", cls=Command)
def fetch_command() -> None:
    """Fetch the newest release of each series from Debian's archive (cached).

    Exit status 2 when a series cannot be had and none was fetched before."""
    if os.geteuid() != 0:
        click.echo("fusewb kernels: fetching needs root (modules go to /usr/lib/modules); run it as root", err=True)
        sys.exit(2)
    problems = fetch(echo=click.echo)
    have = {k.series.name for k in matrix_kernels()}
    for problem in problems:
        click.echo(f"fusewb kernels: {problem}", err=True)
    missing = [s.name for s in MATRIX if s.name not in have]
    if missing:
        click.echo(f"fusewb kernels: missing {', '.join(missing)}; run 'make setup' again once the "
                   f"archive is reachable", err=True)
        sys.exit(2)


@main.command("list", cls=Command)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per kernel.")
def list_command(as_json: bool) -> None:
    """The matrix, and the kernel of each series on this machine."""
    here = {k.series.name: k for k in matrix_kernels()}
    for series in MATRIX:
        kernel = here.get(series.name)
        if as_json:
            click.echo(json.dumps({"series": series.name, "role": series.role, "why": series.why,
                                   "scenarios_held": list(series.scenarios_held), "held_why": series.held_why,
                                   "release": kernel.release if kernel else None,
                                   "image": str(kernel.image) if kernel else None}))
        else:
            where = f"{kernel.release} ({kernel.image})" if kernel else "not here"
            click.echo(f"{series.name:5} {series.role:11} {where}: {series.why}")
            if series.scenarios_held:
                click.echo(f"      not run here: {', '.join(series.scenarios_held)}: {series.held_why}")


@main.command("table", cls=Command)
@click.option("--results", type=click.Path(file_okay=False, path_type=Path), default=Path("build/test-results"),
              show_default=True, help="Folder with the guests' results-<release>.json.")
@click.option("--readme", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Rewrite the table between this file's kernel-table markers (else print it).")
def table_command(results: Path, readme: Path | None) -> None:
    """The scenario x kernel table from the guest stage's results."""
    if not any(results.glob("results-*.json")):
        click.echo(f"fusewb kernels: no results-*.json in {results} (no guest ran): the table stays as it is")
        return
    table = kernel_table(results)
    if readme is None:
        click.echo(table)
        return
    _replace_table(readme, table)
    click.echo(f"fusewb kernels: kernel table in {readme} from {results}")


if __name__ == "__main__":
    main()
