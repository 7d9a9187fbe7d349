"""The guest stage of ``make test``: boot each kernel of the matrix (:mod:`fusewb.kernels`:
Debian 12's 6.1 from /boot, 5.10, 6.12, 6.17 and the newest 7.x fetched from Debian's archive)
with this machine's userspace under virtme-ng and qemu, and run there ``fusewb doctor``, the
kernel-dependent tests (pytest marker ``guest`` where the kernel's role is full, ``conformance``
elsewhere; the lists are in tests/conftest.py) and ``fusewb run all``, whose per-scenario
outcomes go to ``results-<release>.json`` (README's kernel table: ``python -m fusewb.kernels table``).

Every result names its kernel: a junit file ``junit-<release>.xml`` per kernel in ``--out``, each
guest output line prefixed with ``[<release>]``, and one summary line per kernel with its time,
then the total. Guests run ``--jobs`` at a time (default 2), each on its share of this
machine's CPUs. A kernel of the matrix that is not on this machine (the archive could not be
reached) fails the stage under ``FUSEWB_REQUIRE_KERNEL=1`` and is a skip with the reason
otherwise. KVM is used
when a short probe boot with it finishes, else TCG (here a KVM guest hangs in early boot). Every
wait is bounded: a guest that overruns ``--timeout`` is killed (its whole process group) and
reported as a failure with the tail of its console; the guest is also stopped when this command
exits any other way (an exception, SIGINT, SIGTERM).

    python -m fusewb.guest --help
    python -m fusewb.guest                       # every kernel of the matrix
    python -m fusewb.guest --series 6.12 --series 7.x
    python -m fusewb.guest --kernel /boot/vmlinuz-6.1.0-57-amd64 -k temp_page --no-run-all
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
from fusewb.command import Command
from fusewb.kernels import MATRIX, Kernel, Series, matrix_kernels, release_of_image
from fusewb.scenarios import SCENARIOS

__all__ = ["GuestResult", "hardware_virtualization", "run_guest", "main"]

ROOT = Path(__file__).resolve().parent.parent
# the pytest marker of the tests each role runs in its guest (tests/conftest.py)
MARKERS = {"full": "guest", "conformance": "conformance"}
STATUS = "fusewb-guest-status"
KVM_PROBE_SECONDS = 25
TAIL_LINES = 40
# Start-up waits in the guest (fixture servers, tracer compile) stretch by this under each accel
# (TCG: two guests share this machine's two cores, see --jobs).
TIMEOUT_SCALE = {"kvm": 2, "tcg": 8}


@dataclass
class GuestResult:
    """What one guest run gave: per stage its exit status (None: did not finish)."""

    release: str
    accel: str
    seconds: float
    role: str = "full"
    pytest_rc: int | None = None
    doctor_rc: int | None = None
    run_all_rc: int | None = None
    error: str | None = None
    tail: list[str] | None = None

    ran_pytest: bool = True

    @property
    def ok(self) -> bool:
        return (self.error is None and (self.pytest_rc == 0 or not self.ran_pytest)
                and self.doctor_rc in (0, None) and self.run_all_rc in (0, None))


def _given_kernel(image: Path) -> Kernel:
    """A kernel named by its image (``--kernel``): /boot/vmlinuz-<release> or
    .../modules/<release>/vmlinuz; it runs the full list."""
    release = release_of_image(image)
    return Kernel(Series(release, (), re.escape(release), "full", "given with --kernel"), release, image)


def _vng() -> str | None:
    """virtme-ng next to this Python (the virtualenv), else on PATH."""
    local = Path(sys.executable).parent / "vng"
    return str(local) if local.exists() else shutil.which("vng")


def _env() -> dict[str, str]:
    """vng starts virtme-run from PATH: the virtualenv's bin first."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def _command(image: Path, rwdir: Path, script: Path, kvm: bool, cpus: int, memory: str) -> list[str]:
    vng = _vng()
    assert vng is not None
    cmd = [vng, "--force-9p", "--cpus", str(cpus), "--memory", memory, "--rwdir", str(rwdir),
           "--run", str(image), "--exec", f"bash {shlex.quote(str(script))}"]
    if not kvm:
        cmd.insert(1, "--disable-kvm")
    return cmd


class _Procs(list):
    """The guests' process groups; ``closed`` once they were killed, so a guest thread that
    starts one afterwards kills it at once."""

    closed = False


@contextlib.contextmanager
def _stopped_on_exit() -> Iterator[_Procs]:
    """Processes appended to the yielded list are killed (whole group) when the block exits
    however it exits; SIGTERM/SIGHUP become SystemExit meanwhile so that happens too."""
    procs = _Procs()

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    saved = {sig: signal.signal(sig, _exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield procs
    finally:
        procs.closed = True
        for proc in list(procs):
            _kill_group(proc)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _boot(cmd: list[str], timeout: float, on_line, procs: _Procs) -> tuple[int | None, list[str]]:
    """Run the guest; (exit status or None when killed at the timeout, last console lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=_env(), start_new_session=True)
    procs.append(proc)
    if procs.closed:
        _kill_group(proc)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    pending = b""
    while True:
        chunk = None
        with contextlib.suppress(BlockingIOError):
            chunk = proc.stdout.read()
        if chunk:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                tail.append(line)
                on_line(line)
        elif chunk == b"" or proc.poll() is not None:
            if proc.poll() is not None and not chunk:
                if pending:
                    tail.append(pending.decode(errors="replace"))
                    on_line(pending.decode(errors="replace"))
                return proc.returncode, list(tail)
        if time.monotonic() > deadline:
            _kill_group(proc)
            return None, list(tail)
        time.sleep(0.1)


def hardware_virtualization(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU offers VMX or SVM. Without them /dev/kvm can still exist (``kvm_pvm``,
    a software virtualizer for PVM guest kernels), but a stock kernel such as Debian's 6.1 runs
    through KVM's instruction emulator there: measured ~70-90x slower than TCG on this machine."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = {word for line in text.splitlines() if line.startswith("flags") for word in line.split()}
    return bool(flags & {"vmx", "svm"})


def kvm_boots(image: Path, rwdir: Path, cpus: int, memory: str, procs: _Procs) -> tuple[bool, str]:
    """Whether a guest boots with KVM (a probe boot that only prints a marker, bounded), and
    the evidence."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "no usable /dev/kvm"
    if not hardware_virtualization():
        return False, ("/dev/kvm without VMX or SVM (e.g. kvm_pvm): a stock kernel would be "
                       "emulated instruction by instruction, slower than TCG")
    script = rwdir / "kvm-probe.sh"
    script.write_text(f"echo {STATUS} kvm-ok\n")
    seen: list[str] = []
    began = time.monotonic()
    rc, tail = _boot(_command(image, rwdir, script, True, cpus, memory), KVM_PROBE_SECONDS,
                     seen.append, procs)
    took = time.monotonic() - began
    if rc == 0 and any(f"{STATUS} kvm-ok" in line for line in seen):
        return True, f"a KVM probe boot finished in {took:.0f} s"
    if rc is None:
        return False, f"a KVM probe boot did not finish in {KVM_PROBE_SECONDS} s (killed)"
    return False, f"a KVM probe boot failed (exit {rc}: {tail[-1] if tail else 'no output'})"


# The host's cgroup layout (a v1 memory hierarchy beside cgroup2, under a tmpfs) where the guest
# kernel still has the v1 memory controller: the cgroup loads then reclaim as on the host (with
# v2's memory.high the self-wait scenario's server is throttled, never reclaim-throttled).
# Otherwise the guest keeps cgroup2; the line after says which.
HOST_CGROUP_LAYOUT = (
    "if [ ! -e /sys/fs/cgroup/memory/memory.limit_in_bytes ] && mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup; then",
    "  mkdir -p /sys/fs/cgroup/memory /sys/fs/cgroup/unified",
    "  if mount -t cgroup -o memory cgroup /sys/fs/cgroup/memory 2>/dev/null; then",
    "    mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified",
    "  else umount /sys/fs/cgroup; fi",
    "fi",
    "if [ -e /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then echo \"memory cgroup: v1 (as on the host)\"; "
    "else echo \"memory cgroup: v2 (no v1 memory controller could be mounted)\"; fi",
)


def _script(out: Path, pytest_args: list[str] | None, run_all: bool, accel: str = "tcg",
            role: str = "full", held: tuple[str, ...] = ()) -> str:
    """The commands the guest runs: the tests its role marks (unless ``pytest_args`` is None),
    ``fusewb doctor``, then every scenario with its results file."""
    venv_bin = Path(sys.executable).parent
    junit = f"{out}/junit-$(uname -r).xml"
    lines = [
        "set -u",
        f"cd {shlex.quote(str(ROOT))}",
        f"export PATH={shlex.quote(str(venv_bin))}:$PATH PYTHONDONTWRITEBYTECODE=1",
        f"export FUSEWB_TIMEOUT_SCALE={TIMEOUT_SCALE[accel]}",
        f"export FUSEWB_REQUIRE_KERNEL={shlex.quote(os.environ.get('FUSEWB_REQUIRE_KERNEL', ''))}",
        f"echo {STATUS} kernel $(uname -r)",
        *HOST_CGROUP_LAYOUT,
    ]
    if pytest_args is not None:
        lines += [
            f"python -m pytest -p no:cacheprovider -m {MARKERS[role]} --durations=5 --junitxml={junit} "
            f"-o junit_suite_name=fusewb-$(uname -r) {' '.join(shlex.quote(a) for a in pytest_args)}",
            f"echo {STATUS} pytest $?",
        ]
    if run_all:
        lines += ["fusewb doctor", f"echo {STATUS} doctor $?",
                  f"fusewb run {' '.join(s for s in SCENARIOS if s not in held) if held else 'all'} "
                  f"--keep {out}/run-all-$(uname -r) --results {out}/results-$(uname -r).json",
                  f"echo {STATUS} run-all $?"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _lock(path: str | None, wait: float) -> Iterator[None]:
    """Hold ``path`` (flock) for the stage when asked; bounded wait."""
    if not path:
        yield
        return
    with open(path, "a") as fh:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} held by another run for {wait:.0f} s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_guest(kernel: Kernel, out: Path, pytest_args: list[str] | None, run_all: bool, timeout: float,
              accel: str, cpus: int, memory: str, procs: _Procs, echo=print) -> GuestResult:
    """Boot ``kernel`` once and run the guest stage of its role in it; its qemu goes into
    ``procs`` (killed by :func:`_stopped_on_exit` however the stage ends)."""
    release, image = kernel.release, kernel.image
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(dir=out, prefix=".guest-") as tmp:
        work = Path(tmp)
        kvm, why = accel == "kvm", f"--accel {accel}"
        if accel == "auto":
            kvm, why = kvm_boots(image, work, cpus, memory, procs)
        used = "kvm" if kvm else "tcg"
        echo(f"[{release}] booting with {used} ({why}; {cpus} cpus, {memory}); series {kernel.series.name}, "
             f"role {kernel.role}")
        script = work / "guest.sh"
        held = kernel.series.scenarios_held
        if run_all and held:
            echo(f"[{release}] scenarios not run here: {', '.join(held)}: {kernel.series.held_why}")
        script.write_text(_script(out, pytest_args, run_all, used, kernel.role, held))
        result = GuestResult(release, used, 0.0, kernel.role, ran_pytest=pytest_args is not None)

        def on_line(line: str) -> None:
            match = re.search(rf"{STATUS} (pytest|doctor|run-all) (\d+)", line)
            if match:
                setattr(result, f"{match[1].replace('-', '_')}_rc", int(match[2]))
            echo(f"[{release}] {line}")

        rc, tail = _boot(_command(image, out, script, kvm, cpus, memory), timeout, on_line, procs)
    result.seconds = time.monotonic() - began
    if rc is None:
        result.error, result.tail = f"guest did not finish within {timeout:.0f} s (killed)", tail
    elif (pytest_args is not None and result.pytest_rc is None) or (run_all and result.run_all_rc is None):
        result.error, result.tail = f"guest exited ({rc}) before its stages finished", tail
    return result


def _run_guests(kernels: list[Kernel], jobs: int, run) -> list[GuestResult]:
    """``run(kernel, echo)`` for each kernel, ``jobs`` at a time, the full-role kernels first
    (their guests take longest); results in the order given. Each echoed line is whole."""
    said = threading.Lock()

    def echo(line: str) -> None:
        with said:
            click.echo(line)

    order = sorted(kernels, key=lambda k: k.role != "full")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="guest")
    try:
        done = dict(zip((k.release for k in order), pool.map(lambda k: run(k, echo), order)))
    except BaseException:
        # SIGTERM/SIGINT: queued guests never start; the caller kills the running ones
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return [done[k.release] for k in kernels]


def _summary(result: GuestResult) -> str:
    parts = []
    if result.ran_pytest:
        parts.append(f"pytest -m {MARKERS[result.role]}: "
                     f"{'rc ' + str(result.pytest_rc) if result.pytest_rc is not None else 'not run'}")
    if result.doctor_rc is not None:
        parts.append(f"fusewb doctor: rc {result.doctor_rc}")
    if result.run_all_rc is not None:
        parts.append(f"fusewb run all: rc {result.run_all_rc}")
    stages = ", ".join(parts) or "nothing run"
    verdict = "PASS" if result.ok else "FAIL"
    extra = f" ({result.error})" if result.error else ""
    return f"guest {result.release} [{result.accel}, {result.seconds:.0f} s]: {verdict}: {stages}{extra}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, cls=Command)
@click.option("--kernel", "kernels", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Kernel image to boot instead of the matrix (repeatable; runs the full list).")
@click.option("--series", "series", multiple=True, type=click.Choice([s.name for s in MATRIX]),
              help="Only these series of the matrix (repeatable). Default: all of them.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("build/test-results"),
              show_default=True, help="Folder for junit-<release>.xml, results-<release>.json and the run-all captures.")
@click.option("--timeout", type=float, default=2400.0, show_default=True,
              help="Seconds one guest may run (boot, tests, run all) before it is killed.")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True,
              help="auto: KVM when a probe boot with it finishes, else TCG.")
@click.option("--cpus", type=click.IntRange(1), default=None,
              help="vCPUs of each guest. Default: this machine's CPUs shared out over --jobs, so "
              "no vCPU waits for a host core (an overcommitted TCG guest spins on the locks of a "
              "descheduled vCPU: 2 guests of 2 vCPUs here ran each scenario 2.7x slower than one "
              "alone, 2 guests of 1 vCPU 1.1-1.3x).")
@click.option("--memory", default="3G", show_default=True)
@click.option("--pytest/--no-pytest", "with_pytest", default=True, show_default=True,
              help="Run the tests of each kernel's role in its guest.")
@click.option("--run-all/--no-run-all", default=True, show_default=True,
              help="Also run 'fusewb doctor' and 'fusewb run all' in the guest.")
@click.option("--jobs", type=click.IntRange(1), default=min(2, os.cpu_count() or 1), show_default=True,
              help="Guests booted at once, each on its own share of this machine's CPUs.")
@click.option("--lock", "lock", default=None, metavar="PATH",
              help="Hold this flock file for the whole stage (shared machines: /tmp/fusewb-kernel.lock).")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def main(kernels: tuple[Path, ...], series: tuple[str, ...], out: Path, timeout: float, accel: str, cpus: int | None,
         memory: str, with_pytest: bool, run_all: bool, jobs: int, lock: str | None,
         pytest_args: tuple[str, ...]) -> None:
    """Boot the kernel matrix under virtme-ng and run doctor, the kernel tests and 'fusewb run
    all' in each (python -m fusewb.kernels list shows the matrix and its roles).

    \b
    Examples:
      python -m fusewb.guest
      python -m fusewb.guest --series 5.10 --no-run-all -- -k request_join
      python -m fusewb.guest --kernel /boot/vmlinuz-6.1.0-57-amd64 --no-run-all -- -k temp_page
      python -m fusewb.guest --accel tcg --lock /tmp/fusewb-kernel.lock

    Exit status 0 when every guest passed; 1 when one failed, or when a kernel of the matrix is
    not here or no guest can run under FUSEWB_REQUIRE_KERNEL=1 (without it: a skip, said on
    one line each).
    """
    required = os.environ.get("FUSEWB_REQUIRE_KERNEL") == "1"
    word = "FAIL" if required else "SKIPPED"
    if kernels:
        chosen = [_given_kernel(image) for image in kernels]
    else:
        wanted = [s for s in MATRIX if not series or s.name in series]
        here = {k.series.name: k for k in matrix_kernels()}
        chosen = [here[s.name] for s in wanted if s.name in here]
        absent = [s.name for s in wanted if s.name not in here]
        if absent:
            click.echo(f"guest stage {word}: kernel {', '.join(absent)} of the matrix not on this machine "
                       f"(make setup fetches it: python -m fusewb.kernels fetch)", err=True)
            if required:
                sys.exit(1)
    missing = []
    if not chosen:
        missing.append("no kernel to boot")
    if _vng() is None:
        missing.append("no vng (make setup installs virtme-ng into the virtualenv)")
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("no qemu-system-x86_64 (make setup installs qemu-system-x86)")
    if os.geteuid() != 0:
        missing.append("not root")
    if missing:
        click.echo(f"guest stage {word}: {'; '.join(missing)}", err=True)
        sys.exit(1 if required else 0)
    cpus = cpus or max(1, (os.cpu_count() or 1) // jobs)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_lock(lock, timeout))
        except TimeoutError as exc:
            click.echo(f"guest stage FAIL: {exc} (wait for it, or run without --lock)", err=True)
            sys.exit(1)
        procs = stack.enter_context(_stopped_on_exit())
        results = _run_guests(chosen, jobs, lambda kernel, echo: run_guest(
            kernel, out.resolve(), list(pytest_args) if with_pytest else None, run_all, timeout, accel, cpus,
            memory, procs, echo=echo))
    for result in results:
        if result.tail:
            click.echo(f"--- console tail of {result.release} ---")
            for line in result.tail:
                click.echo(f"[{result.release}] {line}")
    for result in results:
        click.echo(_summary(result))
    click.echo(f"guest stage: {len(results)} kernels in {time.monotonic() - began:.0f} s")
    sys.exit(0 if all(r.ok for r in results) else 1)


if __name__ == "__main__":
    main()
