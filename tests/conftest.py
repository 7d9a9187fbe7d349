"""Session-wide checks shared by all tests: nothing of fusewb's may outlive the test session.
Also the one list of test files ``make test`` runs again in each guest kernel (marker ``guest``,
fusewb/guest.py), and the kernel release in every report."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Callable

import pytest


# Tests whose results depend on the kernel version, run again in each guest kernel (marker
# ``guest``): whole files, or "file::test" for single tests of a file. Chosen to keep a full-role
# guest near 15 minutes under TCG (with `fusewb run all`), where a compile of the BPF
# program takes ~20 s and a traced and analysed test a few minutes; the rest of test_doctor.py
# and test_tracepoint_fields.py passes there too (4 minutes, 2026-11-21) but does not fit, nor do
# test_tracer_plan.py's verifier loads of the kprobe plan (~40 s; in the guest that plan is the
# one test_temp_page_waits.py attaches and traces with). Measured 806 s on 2026-12-03.
GUEST_TESTS = frozenset({
    "test_temp_page_waits.py", "test_stuck.py", "test_histograms_real.py", "test_request_join.py",
    "test_progload.py",
    *(f"test_tracer_plan.py::{name}" for name in (
        "test_plan_on_this_kernel", "test_btf_offsets_match_bpftool",
        "test_fuse_module_btf_offsets_match_bpftool", "test_requests_are_keyed_on_the_request_pointer",
        "test_ring_event_structs_have_the_compilers_layout",
        "test_older_kernels_plan_compiles_without_a_compiler_warning",
        "test_capture_writer_parts_meta_and_permissions", "test_tracing_frames_are_dropped_from_stacks")),
    "test_doctor.py::test_doctor_verifies_the_plan_it_proposes",
    "test_tracepoint_fields.py::test_this_kernel_formats_from_tracefs",
    "test_tracepoint_fields.py::test_field_chosen_from_another_kernel_reaches_the_compile",
    "test_tracepoint_fields.py::test_absent_columns_are_null_and_listed_in_meta",
})


# The subset the other kernels of the matrix run (marker ``conformance``; fusewb/kernels.py
# says which kernel runs which), beside `fusewb doctor` and `fusewb run all`.
CONFORMANCE_TESTS = frozenset({
    "test_request_join.py",
    "test_tracer_plan.py::test_plan_on_this_kernel", "test_tracer_plan.py::test_btf_offsets_match_bpftool",
    "test_tracepoint_fields.py::test_this_kernel_formats_from_tracefs",
})
assert CONFORMANCE_TESTS <= GUEST_TESTS


# marker -> the test files its list names
_FILES = {marker: {entry.split("::")[0] for entry in listed}
          for marker, listed in (("guest", GUEST_TESTS), ("conformance", CONFORMANCE_TESTS))}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``-m guest``/``-m conformance`` (the guests of make test) import only the files of their
    list: importing every test module costs minutes under TCG."""
    files = _FILES.get(config.option.markexpr)
    if files is None or not collection_path.name.startswith("test_") or collection_path.suffix != ".py":
        return None
    return collection_path.name not in files or None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", item.name)
        keys = {item.path.name, f"{item.path.name}::{name}"}
        if keys & GUEST_TESTS:
            item.add_marker(pytest.mark.guest)
        if keys & CONFORMANCE_TESTS:
            item.add_marker(pytest.mark.conformance)


def pytest_report_header() -> str:
    return f"kernel: {platform.release()}"


@pytest.fixture(scope="session", autouse=True)
def _kernel_in_junit(record_testsuite_property) -> None:
    """junit files name the kernel their results come from."""
    record_testsuite_property("kernel", platform.release())


def _live_children() -> list[int]:
    """Live fixture servers and load children (``fusewb.fixtures.*``) started by this process."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) != me or fields[0] in ("Z", "X"):
                continue
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if b"fusewb.fixtures." in cmdline:
            found.append(int(stat.parent.name))
    return found


def _owner_gone_or_us(name: str, pid_alive: Callable[[int], bool]) -> bool:
    """Whether cgroup ``fusewb-<what>-<pid>`` was made by this process or by a dead one."""
    suffix = name.rsplit("-", 1)[-1]
    return suffix.isdigit() and (int(suffix) == os.getpid() or not pid_alive(int(suffix)))


@pytest.fixture(scope="session", autouse=True)
def no_fixture_leftovers(tmp_path_factory):
    """After the session: clean stale fixture mounts, then assert that no fixture mount under
    this session's temporary folder, no fusewb cgroup, no memory block borrowed by a hot-unplug
    load and no fixture process of this session is left."""
    if os.geteuid() != 0:
        yield
        return
    from fusewb.fixtures.cgroup import fusewb_cgroups
    from fusewb.fixtures.manage import cleanup_stale, fixture_mounts, unmount_fixture
    from fusewb.fixtures.memblock import borrowed_blocks, restore_stale_blocks
    from fusewb.fixtures.registry import pid_alive

    base = str(tmp_path_factory.getbasetemp()) + os.sep
    cgroups_before = set(fusewb_cgroups())
    yield
    cleanup_stale()
    restore_stale_blocks()
    borrowed = borrowed_blocks()
    left_mounts = [m.mountpoint for m in fixture_mounts() if m.mountpoint.startswith(base)]
    left_cgroups = [p for p in fusewb_cgroups() if p not in cgroups_before
                    and _owner_gone_or_us(p.name, pid_alive)]
    for mountpoint in left_mounts:
        unmount_fixture(mountpoint)
    for path in left_cgroups:
        try:
            path.rmdir()
        except OSError:
            pass
    left_children = _live_children()
    for pid in left_children:
        os.kill(pid, 9)
    assert not left_mounts, f"fixture mounts left behind: {left_mounts}"
    assert not left_children, f"processes left behind: {left_children}"
    assert not left_cgroups, f"fusewb cgroups left behind: {left_cgroups}"
    assert not borrowed, f"memory blocks left borrowed: {borrowed}"
