"""The guest stage's harness (fusewb/guest.py) on its own: bounded waits that kill the whole
process group and keep the console tail, the command it gives vng, and its help."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fusewb import guest
from fusewb.kernels import Kernel, Series


def test_a_guest_that_overruns_is_killed_with_its_group_and_tail() -> None:
    lines: list[str] = []
    began = time.monotonic()
    with guest._stopped_on_exit() as procs:
        rc, tail = guest._boot(["bash", "-c", "echo booting; sleep 60 & echo child $!; wait"], 1.0,
                               lines.append, procs)
    assert rc is None and time.monotonic() - began < 15
    assert tail[0] == "booting" and lines == tail
    child = int(tail[1].split()[1])
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_finished_guest_stages_are_read_from_its_output(tmp_path: Path) -> None:
    with guest._stopped_on_exit() as procs:
        rc, tail = guest._boot(["bash", "-c", f"echo {guest.STATUS} pytest 0; exit 3"], 30, lambda _l: None, procs)
    assert rc == 3 and tail == [f"{guest.STATUS} pytest 0"]
    script = guest._script(tmp_path, ["-k", "x y"], run_all=True)
    assert "-m guest " in script and "'x y'" in script and "fusewb run all" in script
    assert "fusewb doctor" in script and f"--results {tmp_path}/results-$(uname -r).json" in script
    assert "-m conformance " in guest._script(tmp_path, [], run_all=False, role="conformance")
    held = guest._script(tmp_path, [], run_all=True, held=("sync-stalled", "hot-unplug", "self-wait"))
    assert "fusewb run msync-slow close-slow reclaim-memcg dirty-throttle --keep" in held
    assert guest.GuestResult("r", "tcg", 0.0, pytest_rc=0, doctor_rc=0, run_all_rc=0).ok
    assert not guest.GuestResult("r", "tcg", 0.0, pytest_rc=0, doctor_rc=2, run_all_rc=0).ok
    cmd = guest._command(Path("/boot/vmlinuz-x"), tmp_path, tmp_path / "s.sh", False, 2, "3G")
    assert "--disable-kvm" in cmd and cmd[cmd.index("--run") + 1] == "/boot/vmlinuz-x"


def test_kernel_given_by_image_names_its_release(tmp_path: Path) -> None:
    assert guest._given_kernel(Path("/boot/vmlinuz-6.1.0-57-amd64")).release == "6.1.0-57-amd64"
    split = guest._given_kernel(Path("/usr/lib/modules/7.3.4+deb13-amd64/vmlinuz"))
    assert (split.release, split.role) == ("7.3.4+deb13-amd64", "full")


def test_help_names_examples() -> None:
    out = subprocess.run([sys.executable, "-m", "fusewb.guest", "--help"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ))
    assert out.returncode == 0 and "Examples" in out.stdout and "--timeout" in out.stdout


def test_kvm_needs_vmx_or_svm_not_only_dev_kvm(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 hypervisor\n")
    assert not guest.hardware_virtualization(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu vmx sse2\n")
    assert guest.hardware_virtualization(cpuinfo)


def _kernel(release: str, role: str) -> Kernel:
    return Kernel(Series(release, (), release, role, "test"), release, Path(f"/boot/vmlinuz-{release}"))


def test_guests_run_jobs_at_a_time_full_roles_first_results_in_matrix_order() -> None:
    kernels = [_kernel("a", "conformance"), _kernel("b", "full"), _kernel("c", "conformance")]
    started: list[str] = []
    spans: dict[str, tuple[float, float]] = {}

    def run(kernel: Kernel, echo) -> guest.GuestResult:
        started.append(kernel.release)
        began = time.monotonic()
        subprocess.run(["sleep", "0.5"], check=True, timeout=30)
        echo(f"[{kernel.release}] done")
        spans[kernel.release] = (began, time.monotonic())
        return guest.GuestResult(kernel.release, "tcg", 0.5, kernel.role)

    results = guest._run_guests(kernels, 2, run)
    assert [r.release for r in results] == ["a", "b", "c"]
    assert started[0] == "b"  # the full role first
    overlap = lambda x, y: spans[x][0] < spans[y][1] and spans[y][0] < spans[x][1]  # noqa: E731
    assert overlap("a", "b")  # two at once
    assert not (overlap("a", "c") and overlap("b", "c"))  # never three
