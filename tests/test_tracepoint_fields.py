"""Tracepoint fields read from tracefs: a field renamed on another kernel is read under its
name there, a field no name matches costs its column (null, listed in ``absent_columns``) and
never a compile error. The BPF side is compiled and verifier-loaded on this kernel."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pandas as pd
import pytest

from fusewb.bpf import source_dir
from fusewb.contract.errors import FusewbError
from fusewb.tracers.tpfields import TRACEPOINT_FIELDS, parse_format, select_fields
from tests.support import require, require_bpf

BDP = "writeback:balance_dirty_pages"

# writeback:balance_dirty_pages as a 6.1 kernel (Debian 12) prints it: the fields of the shared
# notes (bdi_setpoint and bdi_dirty where 6.18 has wb_setpoint and wb_dirty), laid out as its
# TP_STRUCT__entry declares them.
FORMAT_6_1 = """\
name: balance_dirty_pages
ID: 811
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char bdi[32];\toffset:8;\tsize:32;\tsigned:0;
\tfield:unsigned long limit;\toffset:40;\tsize:8;\tsigned:0;
\tfield:unsigned long setpoint;\toffset:48;\tsize:8;\tsigned:0;
\tfield:unsigned long dirty;\toffset:56;\tsize:8;\tsigned:0;
\tfield:unsigned long bdi_setpoint;\toffset:64;\tsize:8;\tsigned:0;
\tfield:unsigned long bdi_dirty;\toffset:72;\tsize:8;\tsigned:0;
\tfield:unsigned long dirty_ratelimit;\toffset:80;\tsize:8;\tsigned:0;
\tfield:unsigned long task_ratelimit;\toffset:88;\tsize:8;\tsigned:0;
\tfield:unsigned int dirtied;\toffset:96;\tsize:4;\tsigned:0;
\tfield:unsigned int dirtied_pause;\toffset:100;\tsize:4;\tsigned:0;
\tfield:unsigned long paused;\toffset:104;\tsize:8;\tsigned:0;
\tfield:long pause;\toffset:112;\tsize:8;\tsigned:1;
\tfield:unsigned long period;\toffset:120;\tsize:8;\tsigned:0;
\tfield:long think;\toffset:128;\tsize:8;\tsigned:1;
\tfield:ino_t cgroup_ino;\toffset:136;\tsize:8;\tsigned:0;

print fmt: "bdi %s: limit=%lu setpoint=%lu dirty=%lu bdi_setpoint=%lu bdi_dirty=%lu \
dirty_ratelimit=%lu task_ratelimit=%lu dirtied=%u dirtied_pause=%u paused=%lu pause=%ld \
period=%lu think=%ld cgroup_ino=%lu", REC->bdi, REC->limit, REC->setpoint, REC->dirty, \
REC->bdi_setpoint, REC->bdi_dirty, REC->dirty_ratelimit, REC->task_ratelimit, REC->dirtied, \
REC->dirtied_pause, REC->paused, REC->pause, REC->period, REC->think, (unsigned long)REC->cgroup_ino
"""
FIELDS_6_1 = ["bdi", "limit", "setpoint", "dirty", "bdi_setpoint", "bdi_dirty", "dirty_ratelimit",
              "task_ratelimit", "dirtied", "dirtied_pause", "paused", "pause", "period", "think",
              "cgroup_ino"]
# the same tracepoint with 6.18's names (wb_setpoint, wb_dirty)
FIELDS_6_18 = [{"bdi_setpoint": "wb_setpoint", "bdi_dirty": "wb_dirty"}.get(f, f) for f in FIELDS_6_1]


def test_format_parsed_and_older_names_chosen() -> None:
    assert parse_format(FORMAT_6_1) == FIELDS_6_1
    chosen = select_fields({BDP: parse_format(FORMAT_6_1)})
    assert chosen.defines["TPF_BALANCE_DIRTY_PAGES_WB_DIRTY"] == "bdi_dirty"
    assert chosen.defines["TPF_BALANCE_DIRTY_PAGES_WB_SETPOINT"] == "bdi_setpoint"
    assert chosen.defines["TPF_BALANCE_DIRTY_PAGES_PAUSE"] == "pause"
    assert chosen.renamed == {f"{BDP}.wb_dirty": "bdi_dirty", f"{BDP}.wb_setpoint": "bdi_setpoint"}
    assert chosen.absent_columns == {} and chosen.unusable == {}
    # arrays and __data_loc fields are named by their last word
    assert parse_format("\tfield:__data_loc char[] name;\toffset:8;\n\tfield:u8 x[4];\t") == ["name", "x"]


def test_missing_fields_cost_columns_or_the_tracepoint() -> None:
    fields = [f for f in FIELDS_6_1 if f not in ("bdi_dirty", "think")]
    chosen = select_fields({BDP: fields})
    assert chosen.absent_columns == {"throttle": ["think_ms", "wb_dirty"]}
    assert "TPF_BALANCE_DIRTY_PAGES_WB_DIRTY" not in chosen.defines
    assert "TPF_BALANCE_DIRTY_PAGES_THINK" not in chosen.defines
    # a required field (the bdi the FUSE filter needs) missing: the tracepoint is not usable
    assert select_fields({BDP: FIELDS_6_1[1:]}).unusable == {BDP: ["bdi"]}
    # tracepoints not given are not looked at
    assert select_fields({}).defines == {}


def test_every_field_the_bpf_code_reads_is_declared() -> None:
    """``args->X`` in each TRACEPOINT_PROBE is a declared required field or its TPF_ define: so
    every field read is checked against tracefs before the compile."""
    declared: dict[str, set[str]] = {}
    for f in TRACEPOINT_FIELDS:
        declared.setdefault(f.tracepoint, set()).add(f.define or f.names[0])
    seen = set()
    for path in sorted(source_dir().glob("*.bpf.c")):
        text = path.read_text()
        probes = list(re.finditer(r"^(?:RAW_)?TRACEPOINT_PROBE\(([^)]*)\)", text, re.M))
        for i, probe in enumerate(probes):
            if probe.group(0).startswith("RAW_"):
                continue
            tp = ":".join(part.strip() for part in probe.group(1).split(","))
            end = probes[i + 1].start() if i + 1 < len(probes) else len(text)
            for name in re.findall(r"args->(\w+)", text[probe.end():end]):
                assert name in declared.get(tp, set()), f"{path.name}: {tp} reads {name} undeclared"
            seen.add(tp)
    assert BDP in seen and "writeback:folio_wait_writeback" in seen


def _features():
    from fusewb.tracers.features import probe_features

    features = probe_features(test_loads=False)
    require(features.tracepoints.get(BDP, False), f"needs {BDP}")
    return features


def test_this_kernel_formats_from_tracefs() -> None:
    require_bpf()
    from fusewb.tracers.features import tracefs_root
    from fusewb.tracers.plan import choose_plan

    features = _features()
    root = tracefs_root()
    for tp, fields in features.tracepoint_fields.items():
        assert fields == parse_format((root / "events" / tp.replace(":", "/") / "format").read_text())
    plan = choose_plan(features)
    for declared in TRACEPOINT_FIELDS:
        if declared.define in plan.defines:
            assert plan.defines[declared.define] in features.tracepoint_fields[declared.tracepoint]


def test_field_chosen_from_another_kernel_reaches_the_compile() -> None:
    """Fed the other kernel's format (6.1's on a kernel that says wb_dirty, 6.18's on one that
    says bdi_dirty), the plan reads the wb_dirty column under that kernel's name: this kernel has
    no such field, so the compile fails naming it (the define reaches the BPF side); the fields
    both kernels share compile and load."""
    require_bpf()
    from fusewb.tracers.plan import choose_plan
    from fusewb.tracers.program import BuildOptions, verify_program

    features = _features()
    here = set(features.tracepoint_fields[BDP])
    other, name = (FIELDS_6_18, "wb_dirty") if "bdi_dirty" in here else (FIELDS_6_1, "bdi_dirty")
    as_other = replace(features, tracepoint_fields={**features.tracepoint_fields, BDP: other})
    plan = choose_plan(as_other, force="tracepoint")
    assert plan.defines["TPF_BALANCE_DIRTY_PAGES_WB_DIRTY"] == name
    if name == "bdi_dirty":
        assert any("wb_dirty is called bdi_dirty" in line for line in plan.describe())
    with pytest.raises(FusewbError, match=name):
        verify_program(plan, BuildOptions(ring_pages=1))
    # the other kernel's choices this kernel can satisfy: every field both have
    shared = replace(features, tracepoint_fields={**features.tracepoint_fields,
                                                  BDP: [f for f in other if f in here]})
    plan = choose_plan(shared, force="tracepoint")
    assert plan.absent_columns == {"throttle": ["wb_dirty", "wb_setpoint"]}
    programs, _seconds = verify_program(plan, BuildOptions(ring_pages=1))
    assert programs == len(plan.tracepoints) + len(plan.raw_tracepoints)


@pytest.mark.parametrize("force", ["tracepoint", "kprobe"])
def test_missing_fields_compile_and_load(force: str) -> None:
    """Every column field of balance_dirty_pages forced absent: the program still compiles and
    passes the verifier, and the plan lists the columns as absent."""
    require_bpf()
    from fusewb.tracers.plan import choose_plan
    from fusewb.tracers.program import BuildOptions, verify_program

    features = _features()
    bare = replace(features, tracepoint_fields={**features.tracepoint_fields, BDP: ["bdi"]})
    plan = choose_plan(bare, force=force)
    assert BDP in plan.tracepoints
    assert not [d for d in plan.defines if d.startswith("TPF_BALANCE_DIRTY_PAGES_")]
    assert set(plan.absent_columns["throttle"]) == {
        f.column.split(".")[1] for f in TRACEPOINT_FIELDS if f.tracepoint == BDP and f.column
    }
    programs, _seconds = verify_program(plan, BuildOptions(ring_pages=1))
    assert programs == len(plan.tracepoints) + len(plan.raw_tracepoints) + 2 * len(plan.kprobes) + len(plan.entry_kprobes)
    # and a required field missing: the tracepoint leaves the plan, the rest still loads
    no_bdi = replace(features, tracepoint_fields={**features.tracepoint_fields, BDP: FIELDS_6_1[1:]})
    plan = choose_plan(no_bdi, force=force)
    assert BDP not in plan.tracepoints and "FUSE_THROTTLE" not in plan.defines
    assert "lacks bdi" in plan.skipped[f"tracepoint:{BDP}"]
    verify_program(plan, BuildOptions(ring_pages=1))


def test_absent_columns_are_null_and_listed_in_meta(tmp_path) -> None:
    require_bpf()
    from fusewb.tracers.capture import CaptureWriter
    from fusewb.tracers.plan import choose_plan
    from fusewb.tracers.session import TraceOptions, Tracer

    features = _features()
    fields = [f for f in features.tracepoint_fields[BDP] if f not in ("wb_dirty", "bdi_dirty")]
    tracer = Tracer(TraceOptions(output=tmp_path / "cap"))
    tracer.plan = choose_plan(replace(features, tracepoint_fields={**features.tracepoint_fields, BDP: fields}))
    tracer.absent_columns = tracer.plan.absent_columns
    tracer.capture = CaptureWriter(tmp_path / "cap", tracer._initial_meta(0))
    tracer._add("throttle", {"ts_ns": 1, "pid": 2, "tgid": 2, "comm": "w", "bdi": "0:50", "pause_ms": 3,
                             "period_ms": 4, "paused_ms": 0, "think_ms": 0, "dirty": 5, "limit": 6,
                             "setpoint": 7, "wb_dirty": 0, "wb_setpoint": 8, "dirty_ratelimit": 9,
                             "task_ratelimit": 10, "dirtied": 11})
    tracer.capture.close(end_monotonic_ns=2)
    meta = json.loads((tmp_path / "cap" / "meta.json").read_text())
    assert meta["absent_columns"] == {"throttle": ["wb_dirty"]}
    throttle = pd.read_parquet(tmp_path / "cap" / "throttle")
    assert throttle["wb_dirty"].isna().all() and throttle["wb_setpoint"].tolist() == [8]
