"""The tracer's building blocks on the real kernel: BTF offsets, the probe plan, the kprobe plan
through the verifier, the header mirrors, and the capture writer."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import os
import re
import shutil
import stat
import subprocess

import pandas as pd
import pytest

from fusewb.contract.errors import FusewbError
from fusewb.contract.schema import TABLES
from fusewb.tracers.btf import load_vmlinux_btf
from fusewb.tracers.capture import CaptureWriter
from fusewb.tracers.events import header_defs
from fusewb.tracers.plan import (
    FUSE_WAIT_FUNCTIONS, KPROBE_FUNCTIONS, REQUEST_KPROBES, _request_len_layout, ProbePlan, choose_plan,
)
from tests.support import require, require_bpf


@functools.lru_cache(maxsize=4)
def _bpftool_raw(btf: str) -> str:
    """bpftool's raw dump of a BTF file: the independent reading the tests compare with."""
    return subprocess.run(["bpftool", "btf", "dump", "file", btf, "format", "raw"],
                          capture_output=True, text=True, timeout=120, check=True).stdout


def _bpftool_member_offset(struct: str, member: str, btf: str = "/sys/kernel/btf/vmlinux") -> int:
    """The offset bpftool reports (bits_offset / 8) for a direct member of a struct."""
    block = _bpftool_raw(btf).split(f"STRUCT '{struct}' size=", 1)[1].split("\n[", 1)[0]
    match = re.search(rf"^\s+'{member}' type_id=\d+ bits_offset=(\d+)", block, re.M)
    assert match, f"bpftool shows no {struct}.{member}"
    return int(match.group(1)) // 8


def _bpftool_has(struct: str, member: str, btf: str) -> bool:
    """Whether bpftool shows ``struct`` defined with a direct ``member``."""
    dump = _bpftool_raw(btf)
    if f"STRUCT '{struct}' size=" not in dump:
        return False
    block = dump.split(f"STRUCT '{struct}' size=", 1)[1].split("\n[", 1)[0]
    return re.search(rf"^\s+'{member}' type_id=", block, re.M) is not None


def _pointer_layout() -> bool:
    """Whether this kernel's BTF has what the request-pointer plan reads (``fuse_req.fm`` and
    on: 7.2 renamed it ``chan``, a struct its BTF only declares)."""
    from fusewb.tracers.btf import BtfError, load_module_btf

    try:
        load_module_btf("fuse").member_offset("fuse_req", "fm")
    except BtfError:
        return False
    return True


def _bpftool_member_size(struct: str, member: str, btf: str) -> tuple[int, int | None]:
    """(bytes, array elements or None) of a direct member, its type followed through
    bpftool's raw dumps (typedefs and qualifiers to an int, struct, pointer or array)."""
    out = _bpftool_raw(btf)
    # a module's split BTF refers to vmlinux's types by their ids: both dumps, ids disjoint
    types = {int(m.group(1)): m.group(2) for dump in (_bpftool_raw("/sys/kernel/btf/vmlinux"), out)
             for m in re.finditer(r"^\[(\d+)\] (.*)$", dump, re.M)}
    block = out.split(f"STRUCT '{struct}' size=", 1)[1].split("\n[", 1)[0]
    type_id = int(re.search(rf"^\s+'{member}' type_id=(\d+)", block, re.M).group(1))

    def size(tid: int) -> int:
        line = types[tid]
        if line.startswith(("INT", "STRUCT", "UNION", "ENUM")):
            return int(re.search(r"size=(\d+)", line).group(1))
        if line.startswith("PTR"):
            return 8
        if line.startswith("ARRAY"):
            elem, n = re.search(r" type_id=(\d+) index_type_id=\d+ nr_elems=(\d+)", line).groups()
            return int(n) * size(int(elem))
        return size(int(re.search(r"type_id=(\d+)", line).group(1)))  # typedef, const, ...

    line = types[type_id]
    while line.startswith(("TYPEDEF", "CONST", "VOLATILE")):
        type_id = int(re.search(r"type_id=(\d+)", line).group(1))
        line = types[type_id]
    elems = re.search(r"nr_elems=(\d+)", line) if line.startswith("ARRAY") else None
    return size(type_id), int(elems.group(1)) if elems else None


def test_btf_offsets_match_bpftool() -> None:
    require_bpf()
    require(shutil.which("bpftool") is not None, "needs bpftool")
    btf = load_vmlinux_btf()
    for member in ("pid", "tgid"):
        assert btf.member_offset("task_struct", member) == _bpftool_member_offset("task_struct", member)
    # The sched_switch raw tracepoint takes (ctx, preempt, prev, next[, prev_state]).
    assert btf.func_proto_arity("btf_trace_sched_switch") in (4, 5)


def test_plan_on_this_kernel() -> None:
    require_bpf()
    from fusewb.tracers.features import probe_features

    features = probe_features(test_loads=False)
    plan = choose_plan(features)
    wait_fn = features.symbols.get("folio_wait_writeback") or features.symbols.get("wait_on_page_writeback")
    expected = "kprobe" if features.kprobes.ok and wait_fn else "tracepoint"
    assert plan.name == expected
    if plan.name == "tracepoint":
        assert plan.kprobes == []
        assert all(why for probe, why in plan.skipped.items() if probe.startswith("kprobe:"))
        if features.raw_tracepoint.ok:
            assert plan.raw_tracepoints[0] == "sched_switch"
            assert int(plan.defines["TASK_PID_OFF"]) == load_vmlinux_btf().member_offset("task_struct", "pid")
    assert any(line.startswith("attach ") for line in plan.describe())
    with pytest.raises(ValueError):
        choose_plan(features, "fentry-someday")


def test_kprobe_plan_passes_the_verifier() -> None:
    """Compile the kprobe plan and load every kprobe program into the verifier, not attached."""
    require_bpf()
    from bcc import BPF

    from fusewb.tracers.features import probe_features
    from fusewb.tracers.program import BuildOptions, compile_program, kprobe_function_names

    features = probe_features(test_loads=False)
    plan = choose_plan(features, force="kprobe")
    assert plan.kprobes[0] == "folio_wait_writeback"
    assert set(plan.kprobes[1:]) <= set(KPROBE_FUNCTIONS) | set(FUSE_WAIT_FUNCTIONS)
    bpf = compile_program(plan, BuildOptions(ring_pages=1))
    try:
        loaded = []
        for function in plan.kprobes:
            for name in kprobe_function_names(function):
                fn = bpf.load_func(name.encode(), BPF.KPROBE)
                assert fn.fd >= 0
                loaded.append(name)
        assert len(loaded) == 2 * len(plan.kprobes)
        # The ctypes mirrors parsed from bpf/fusewb.h have the compiler's sizes.
        defs = header_defs()
        for table, struct in [("wait_pending", "wait_pending"), ("fn_stats", "fn_stats"),
                              ("requests_pending", "request_pending"), ("server_threads", "server_thread")]:
            assert ctypes.sizeof(bpf[table.encode()].Leaf) == ctypes.sizeof(defs.structs[struct]), table
    finally:
        bpf.cleanup()


def _layout_asserts(struct: str, cls: type[ctypes.Structure]) -> list[str]:
    """C static assertions that ``struct`` has the size and field offsets of its ctypes mirror."""
    lines = [f"_Static_assert(sizeof(struct {struct}) == {ctypes.sizeof(cls)}, "
             f'"sizeof {struct}");']
    lines += [f"_Static_assert(__builtin_offsetof(struct {struct}, {name}) == "
              f'{getattr(cls, name).offset}, "offsetof {struct}.{name}");'
              for name, _ in cls._fields_]
    return lines


def _compile_layout_check(lines: list[str]) -> str | None:
    """Compile the header plus ``lines`` with bcc's clang for the BPF target; the first error
    line, None when it compiles."""
    from bcc import BPF

    from fusewb.tracers.headers import prepare_bcc_environment
    from fusewb.tracers.program import BPF_DIR

    prepare_bcc_environment()
    text = "\n".join(['#include <linux/types.h>', '#include "fusewb.h"', *lines, ""])
    try:
        BPF(text=text.encode(), cflags=[f"-I{BPF_DIR}"]).cleanup()
    except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception for compile errors
        return str(exc)
    return None


def test_ring_event_structs_have_the_compilers_layout(capfd) -> None:
    """Every ring buffer event struct (the registry's) has, as the BPF compiler lays it out, the
    size and field offsets of the ctypes mirror user space decodes it with."""
    require_bpf()
    from fusewb.contract.events import EVENT_KINDS

    defs = header_defs()
    lines = [line for kind in EVENT_KINDS
             for line in _layout_asserts(kind.struct, defs.structs[kind.struct])]
    assert len(lines) > len(EVENT_KINDS) * 5
    assert _compile_layout_check(lines) is None, capfd.readouterr().err[-2000:]
    # The check can fail: a wrong offset is a compile error naming the field.
    first = defs.structs[EVENT_KINDS[0].struct]
    name = first._fields_[1][0]
    wrong = (f"_Static_assert(__builtin_offsetof(struct {EVENT_KINDS[0].struct}, {name}) == "
             f'{getattr(first, name).offset + 1}, "offsetof {EVENT_KINDS[0].struct}.{name}");')
    assert _compile_layout_check([wrong]) is not None
    assert f"offsetof {EVENT_KINDS[0].struct}.{name}" in capfd.readouterr().err


def test_capture_writer_parts_meta_and_permissions(tmp_path) -> None:
    out = tmp_path / "cap"
    writer = CaptureWriter(out, {"plan": "tracepoint"})
    row = {"stack_id": 7, "frames": ["folio_wait_writeback", "fuse_fsync"]}
    writer.add("stacks", row)
    writer.flush()
    writer.add("stacks", {**row, "stack_id": 8})
    writer.close(end_monotonic_ns=5)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    parts = sorted((out / "stacks").glob("*.parquet"))
    assert [p.name for p in parts] == ["part-000001.parquet", "part-000002.parquet"]
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in parts)
    stacks = pd.read_parquet(out / "stacks")
    assert stacks.stack_id.tolist() == [7, 8]
    assert list(stacks.frames[0]) == row["frames"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] is True and meta["tables"]["stacks"] == 2
    assert set(meta["tables"]) == set(TABLES)
    with pytest.raises(FusewbError):
        CaptureWriter(out, {})


def test_sched_switch_tracepoint_fallback_loads_and_attaches() -> None:
    """Without raw tracepoints (or BTF) the plan pairs waits with sched:sched_switch instead."""
    require_bpf()
    from dataclasses import replace

    from fusewb.tracers.features import Check, probe_features
    from fusewb.tracers.program import BuildOptions, compile_program

    features = replace(probe_features(test_loads=False),
                       raw_tracepoint=Check(False, "pretend: no raw tracepoints"))
    require(features.tracepoints.get("sched:sched_switch", False), "needs sched:sched_switch")
    plan = choose_plan(features, force="tracepoint")
    assert plan.defines["SCHED_SWITCH_RAW"] == "0"
    assert "sched:sched_switch" in plan.tracepoints and not plan.raw_tracepoints
    assert "raw_tracepoint:sched_switch" in plan.skipped
    bpf = compile_program(plan, BuildOptions(ring_pages=1))
    try:
        assert bpf.num_open_tracepoints() == len(plan.tracepoints)
    finally:
        bpf.cleanup()


def test_tracing_frames_are_dropped_from_stacks() -> None:
    from fusewb.tracers.live import path_hint
    from fusewb.tracers.rows import drop_tracing_frames

    raw = ["__traceiter_folio_wait_writeback", "folio_wait_writeback", "__filemap_fdatawait_range",
           "file_write_and_wait_range", "fuse_fsync", "__do_sys_msync"]
    assert drop_tracing_frames(raw) == raw[1:]
    assert drop_tracing_frames(raw[1:]) == raw[1:]
    assert path_hint(drop_tracing_frames(raw)) == "fuse_fsync"
    assert path_hint(["folio_wait_writeback", "migrate_pages_batch", "migrate_pages"]) == "migrate_pages_batch"


def test_pre_folio_kernels_probe_the_page_functions() -> None:
    """Debian 11's 5.10 (as its kallsyms were read in the 5.10 guest): no folio_wait_writeback or
    shrink_folio_list but their pre-folio names, kprobes attach. The kprobe plan times waits on
    wait_on_page_writeback and counts shrink_page_list; it compiles and passes the verifier here
    (with this kernel's wait tracepoint: 5.10's writeback:wait_on_page_writeback is not here)."""
    require_bpf()
    from fusewb.tracers.features import Check, probe_features
    from fusewb.tracers.program import BuildOptions, verify_program

    features = probe_features(test_loads=False)
    hidden = {"folio_wait_writeback", "shrink_folio_list", "migrate_pages_batch", "fuse_iomap_writeback_range"}
    older = dataclasses.replace(
        features,
        kprobes=Check(True, "kprobe_events accepts a probe (as in the 5.10 guest)"),
        tracepoints={**features.tracepoints, "fuse:fuse_request_send": False, "fuse:fuse_request_end": False},
        symbols={**{fn: ok for fn, ok in features.symbols.items() if fn not in hidden},
                 **{fn: False for fn in hidden}, "wait_on_page_writeback": True, "shrink_page_list": True},
        symbol_names={**{fn: name for fn, name in features.symbol_names.items() if fn not in hidden},
                      "wait_on_page_writeback": "wait_on_page_writeback", "shrink_page_list": "shrink_page_list"},
    )
    plan = choose_plan(older)
    assert plan.name == "kprobe"
    assert plan.symbol("folio_wait_writeback") == "wait_on_page_writeback"
    assert plan.symbol("shrink_folio_list") == "shrink_page_list"
    assert {"kprobe:wait_on_page_writeback", "kretprobe:wait_on_page_writeback",
            "kprobe:shrink_page_list"} <= set(plan.probes())
    assert not {"kprobe:folio_wait_writeback", "kretprobe:folio_wait_writeback"} & set(plan.probes())
    assert any("wait_on_page_writeback" in note for note in plan.notes)
    loaded, _seconds = verify_program(plan, BuildOptions(ring_pages=1))
    assert loaded == len(plan.tracepoints) + len(plan.raw_tracepoints) + 2 * len(plan.kprobes) + len(plan.entry_kprobes)


def test_fuse_module_btf_offsets_match_bpftool() -> None:
    """The fuse module's split BTF (vmlinux's own when fuse is built in), read on top of vmlinux."""
    require_bpf()
    require(shutil.which("bpftool") is not None, "needs bpftool")
    from fusewb.tracers.btf import BTF_DIR, load_module_btf
    from fusewb.tracers.kallsyms import read_kallsyms

    require("fuse_request_end" in read_kallsyms(["fuse_request_end"]).names, "needs FUSE (modprobe fuse)")
    from fusewb.tracers.btf import BtfError

    where = BTF_DIR / "fuse" if (BTF_DIR / "fuse").exists() else BTF_DIR / "vmlinux"
    btf = load_module_btf("fuse")
    for struct, member in [("fuse_req", "fm"), ("fuse_req", "args"), ("fuse_mount", "fc"), ("fuse_dev", "fc")]:
        if _bpftool_has(struct, member, str(where)):
            assert btf.member_offset(struct, member) == _bpftool_member_offset(struct, member, str(where)), (where, member)
        else:  # 7.2+: fuse_req.chan, and fuse_mount/fuse_dev no longer in vmlinux's BTF
            with pytest.raises(BtfError):
                btf.member_offset(struct, member)
    # in.h is fuse_in_header at a nested offset: unique 8 bytes after len (uapi layout)
    assert btf.member_offset("fuse_req", "in.h.unique") == btf.member_offset("fuse_req", "in.h.len") + 8
    # what the send adds a request's length up from (FUSE_REQ_LEN_FROM_ARGS)
    layout = _request_len_layout()
    numargs_size, _ = _bpftool_member_size("fuse_args", "in_numargs", str(where))
    in_args_size, in_args_max = _bpftool_member_size("fuse_args", "in_args", str(where))
    assert {key: int(value) for key, value in layout.items()} == {
        "REQ_IN_HEADER_SIZE": 40,  # sizeof(struct fuse_in_header), uapi
        "REQ_ARGS_OFF": _bpftool_member_offset("fuse_req", "args", str(where)),
        "ARGS_IN_NUMARGS_OFF": _bpftool_member_offset("fuse_args", "in_numargs", str(where)),
        "ARGS_IN_NUMARGS_SIZE": numargs_size,
        "ARGS_IN_ARGS_OFF": _bpftool_member_offset("fuse_args", "in_args", str(where)),
        "IN_ARGS_MAX": in_args_max,
        "IN_ARG_STRIDE": in_args_size // in_args_max,
        "IN_ARG_SIZE_OFF": _bpftool_member_offset("fuse_in_arg", "size", str(where)),
    }, where


def _older_kernels_kprobe_plan() -> ProbePlan:
    """The kprobe plan of kernels without fuse:* tracepoints: where this kernel has them, they are
    hidden, and functions inlined here are named by their 6.1 kallsyms names."""
    require_bpf()
    from fusewb.tracers.features import probe_features

    features = probe_features(test_loads=False)
    require("fuse_request_end" in features.symbol_names, "needs FUSE (modprobe fuse)")
    older = dataclasses.replace(
        features,
        tracepoints={**features.tracepoints, "fuse:fuse_request_send": False, "fuse:fuse_request_end": False},
        symbol_names={"queue_request_and_unlock": "queue_request_and_unlock",
                      "fuse_wait_on_page_writeback": "fuse_wait_on_page_writeback.part.0",
                      **features.symbol_names},
    )
    return choose_plan(older, force="kprobe")


def test_fuse_kprobes_of_older_kernels_pass_the_verifier() -> None:
    """The temp-page waits (fuse_set_nowrite, fuse_wait_on_page_writeback) and the request
    kprobes (used where fuse:* tracepoints are absent) compile and pass the verifier on this
    kernel, nothing attached; they attach in the 6.1 guest (tests/test_temp_page_waits.py)."""
    from fusewb.tracers.program import BuildOptions, verify_program

    plan = _older_kernels_kprobe_plan()
    assert plan.defines["FUSE_REQ_PTR"] == "1" and plan.entry_kprobes == REQUEST_KPROBES
    assert plan.defines.get("FUSE_WAIT_KPROBES") == "1" and set(FUSE_WAIT_FUNCTIONS) <= set(plan.kprobes)
    assert {"kprobe:fuse_wait_on_page_writeback.part.0", "kprobe:fuse_wait_on_page_writeback"} & set(plan.probes())
    loaded, _seconds = verify_program(plan, BuildOptions(ring_pages=1))
    assert loaded == len(plan.tracepoints) + len(plan.raw_tracepoints) + 2 * len(plan.kprobes) + len(plan.entry_kprobes)


def test_older_kernels_plan_compiles_without_a_compiler_warning(capfd: pytest.CaptureFixture[str]) -> None:
    """clang prints its warnings to the terminal of whoever traces: the kprobe plan (with the
    request length added up from the arguments, FUSE_REQ_LEN_FROM_ARGS) compiles silently against
    this kernel's headers and BTF layout. It once warned "loop not unrolled" on 6.1."""
    from fusewb.tracers.program import BuildOptions, compile_program

    plan = _older_kernels_kprobe_plan()
    assert plan.defines.get("FUSE_REQ_LEN_FROM_ARGS") == ("1" if _pointer_layout() else None)
    capfd.readouterr()
    compile_program(plan, BuildOptions(ring_pages=1)).cleanup()
    err = capfd.readouterr().err
    assert not [line for line in err.splitlines() if "warning" in line.lower()], err


def test_requests_are_keyed_on_the_request_pointer() -> None:
    """Where the fuse:* tracepoints exist, the plan takes them raw (the request is their first
    argument) and reads the request's fields at BTF offsets; where not (before 6.12), the
    kprobe plan probes the request's lifecycle."""
    require_bpf()
    from fusewb.tracers.features import probe_features

    features = probe_features(test_loads=False)
    require("fuse_request_end" in features.symbol_names, "needs FUSE (modprobe fuse)")
    require(features.raw_tracepoint.ok, "needs raw tracepoints")
    if not _pointer_layout():
        # 7.2+: no offsets for the request's connection, so the plan joins the fuse:* tracepoints'
        # fields on (connection, unique), which the send carries from 6.18 on; it says why
        plan = choose_plan(features, force="kprobe")
        assert "FUSE_REQ_PTR" not in plan.defines and plan.defines.get("FUSE_REQUESTS") == "1", plan.describe()
        assert "fuse_req has no member 'fm'" in plan.skipped["kprobe:queue_request_and_unlock"]
        assert {"fuse:fuse_request_send", "fuse:fuse_request_end"} <= set(plan.tracepoints)
    elif features.tracepoints.get("fuse:fuse_request_send"):
        for force in ("tracepoint", "kprobe"):
            plan = choose_plan(features, force=force)
            assert plan.defines["FUSE_REQ_PTR"] == "2", plan.describe()
            assert {"fuse_request_send", "fuse_request_end"} <= set(plan.raw_tracepoints)
            assert "fuse:fuse_request_send" not in plan.tracepoints
    else:
        plan = choose_plan(features, force="kprobe")
        assert plan.defines["FUSE_REQ_PTR"] == "1", plan.describe()
        assert [plan.symbol(fn) for fn in plan.entry_kprobes] == [features.symbol_names[fn] for fn in REQUEST_KPROBES]


def test_kretprobes_attach_before_their_kprobes() -> None:
    """Handlers at one address run newest first: the entry kprobe, attached after its kretprobe,
    takes its stack before the return address becomes the kretprobe trampoline (which 5.10's
    unwinder cannot pass: stacks there ended in kretprobe_trampoline)."""
    from fusewb.tracers.program import attach_kprobes

    calls: list[tuple[str, str]] = []

    class Recorder:
        def attach_kprobe(self, event: str, fn_name: str) -> None:
            calls.append(("kprobe", event))

        def attach_kretprobe(self, event: str, fn_name: str) -> None:
            calls.append(("kretprobe", event))

    plan = ProbePlan("kprobe", kprobes=["fuse_set_nowrite"], entry_kprobes=["fuse_dev_do_read"],
                     symbols={"fuse_set_nowrite": "fuse_set_nowrite.part.0"})
    attached = attach_kprobes(Recorder(), plan)
    assert calls == [("kretprobe", "fuse_set_nowrite.part.0"), ("kprobe", "fuse_set_nowrite.part.0"),
                     ("kprobe", "fuse_dev_do_read")]
    assert attached == ["kretprobe:fuse_set_nowrite.part.0", "kprobe:fuse_set_nowrite.part.0", "kprobe:fuse_dev_do_read"]


def test_fuse_module_without_btf_is_said_and_requests_are_not_traced(tmp_path, monkeypatch) -> None:
    """5.10: fuse is a loaded module (``/sys/module/fuse/initstate``) but the kernel has no module
    BTF, so fuse's struct offsets are nowhere: the plan says that requests are not traced and
    why, and still times the waits."""
    require_bpf()
    from fusewb.tracers import btf
    from fusewb.tracers.features import Check, probe_features

    (tmp_path / "module" / "fuse").mkdir(parents=True)
    (tmp_path / "module" / "fuse" / "initstate").write_text("live\n")
    monkeypatch.setattr(btf, "SYS_MODULE", tmp_path / "module")
    monkeypatch.setattr(btf, "BTF_DIR", tmp_path / "btf")
    with pytest.raises(btf.BtfError, match="the fuse module has no BTF"):
        btf.load_module_btf("fuse")
    features = probe_features(test_loads=False)
    older = dataclasses.replace(
        features, kprobes=Check(True, "as in the 5.10 guest"),
        tracepoints={**features.tracepoints, "fuse:fuse_request_send": False, "fuse:fuse_request_end": False},
        symbol_names={"queue_request_and_unlock": "queue_request_and_unlock", **features.symbol_names})
    plan = choose_plan(older)
    assert plan.name == "kprobe" and "FUSE_REQ_PTR" not in plan.defines and "FUSE_REQUESTS" not in plan.defines
    assert any(n.startswith("FUSE requests are not traced on this kernel (BTF: the fuse module has no BTF")
               for n in plan.notes), plan.notes
    assert "no BTF" in plan.skipped["kprobe:queue_request_and_unlock"]
    assert "folio_wait_writeback" in plan.kprobes
