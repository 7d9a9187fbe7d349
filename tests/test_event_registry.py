"""The event registry (contract/events.py) against the header and the capture schema, the rows
built from ring buffer events, meta.json's one declaration (contract/meta.py), and the one
declaration of each table (contract/schema.py TABLE_SPECS) and tracepoint group
(contract/tracepoints.py) against every mapping derived from them, on every engine. No kernel:
the layouts against the compiler are checked in test_tracer_plan.py."""

from __future__ import annotations

import ctypes
import importlib
import re

import pytest

from fusewb import analysis
from fusewb.analysis.capture import META_SPEC, REQUIRED_COLUMNS, TABLE_PROBES, load_capture
from fusewb.analysis.flagging import flags
from fusewb.analysis.scan import BIG_TABLES, ENGINES, READ_COLUMNS, SMALL_TABLES, scan
from fusewb.analysis.synthetic import START_NS, make_meta, write_capture
from fusewb.contract.events import (
    EVENT_KINDS,
    FUSE_WAIT_FUNCTIONS,
    REQUEST_KPROBES,
    STACKS_FROM,
    VM_EVENT_KINDS,
    event_kind,
)
from fusewb.contract.meta import META, META_KEYS, initial_meta
from fusewb.contract.schema import TABLE_SPECS, TABLES, VM_KINDS, part_name
from fusewb.contract.tracepoints import TRACEPOINT_GROUPS
from fusewb.tracers.events import HEADER, decode, header_defs
from fusewb.tracers.features import KERNEL_FUNCTIONS, TRACEPOINTS
from fusewb.tracers.plan import _OPTIONAL_TRACEPOINTS
from fusewb.tracers.rows import _DERIVED, event_row
from fusewb.tracers.tpfields import TRACEPOINT_FIELDS


def _by_table(table: str):
    return next(kind for kind in EVENT_KINDS if kind.table == table)


def test_every_header_event_kind_is_registered_once() -> None:
    constants = header_defs().constants
    in_header = {name for name in constants if name.startswith("EV_")}
    assert in_header == {kind.define for kind in EVENT_KINDS}
    assert len({constants[kind.define] for kind in EVENT_KINDS}) == len(EVENT_KINDS)
    assert len({kind.table for kind in EVENT_KINDS}) == len(EVENT_KINDS)
    vm_defines = {name for name in constants if re.fullmatch(r"VM_[A-Z_]+", name)}
    assert vm_defines == {kind.define for kind in VM_EVENT_KINDS}
    assert list(VM_KINDS) == [kind.name for kind in VM_EVENT_KINDS]


def test_every_event_struct_fills_columns_of_its_table() -> None:
    structs = header_defs().structs
    for kind in EVENT_KINDS:
        assert kind.table in TABLES and kind.struct in structs
        fields = {name for name, _ in structs[kind.struct]._fields_}
        shared = fields & set(TABLES[kind.table].names)
        assert len(shared) >= 4, f"{kind.struct} fills almost nothing of {kind.table}"
        assert structs[kind.struct]._fields_[0][0] == "kind", "the kind is the first u32"
    assert STACKS_FROM in TABLES and "stacks" in TABLES


def test_table_probes_follow_from_the_registry() -> None:
    assert set(TABLE_PROBES) == {k.table for k in EVENT_KINDS} | {"stacks"} | {
        f"vm:{k.name}" for k in VM_EVENT_KINDS}
    assert TABLE_PROBES["stacks"] == TABLE_PROBES[STACKS_FROM]
    assert all(TABLE_PROBES.values())


def test_macro_array_sizes_are_resolved() -> None:
    defs = header_defs()
    assert "char comm[COMM_LEN];" in HEADER.read_text()
    wait = defs.structs["wait_event"]
    assert wait.comm.size == defs.constants["COMM_LEN"]
    assert wait.bdi.size == defs.constants["BDI_NAME_LEN"]


def test_an_unknown_macro_array_size_is_refused(tmp_path) -> None:
    header = tmp_path / "h.h"
    header.write_text("#define N 4\nstruct ok {\n    char a[N];\n};\nstruct bad {\n    char b[M];\n};\n")
    with pytest.raises(ValueError, match="array size M"):
        header_defs(header)


def _event(struct: str, **values):
    cls = header_defs().structs[struct]
    event = cls()
    event.kind = header_defs().constants[next(k.define for k in EVENT_KINDS if k.struct == struct)]
    for name, value in values.items():
        setattr(event, name, value)
    return event


def _decoded(event):
    buffer = ctypes.create_string_buffer(bytes(event), ctypes.sizeof(event))
    return decode(ctypes.addressof(buffer), ctypes.sizeof(event))


def test_wait_event_row() -> None:
    consts = header_defs().constants
    event = _event("wait_event", pid=7, tgid=6, stack_id=-14, ts_ns=10, duration_ns=5, ino=2,
                   index=3, source=consts["SRC_KRETPROBE"], comm=b"writer", bdi=b"0:52")
    kind, decoded = _decoded(event)
    assert kind is _by_table("waits")
    assert event_row(kind, decoded, lambda c: None) == {
        "ts_ns": 10, "duration_ns": 5, "ongoing": False, "pid": 7, "tgid": 6, "comm": "writer",
        "bdi": "0:52", "ino": 2, "index": 3, "stack_id": -1, "source": "kretprobe"}


def test_request_event_row() -> None:
    event = _event("request_event", connection=52, unique=9, send_ts_ns=100, end_ts_ns=350,
                   opcode=16, len=4096, error=-5, pid=1, tgid=1, end_pid=2, end_tgid=2,
                   comm=b"kworker/u4:1", end_comm=b"python")
    kind, decoded = _decoded(event)
    row = event_row(kind, decoded, {52: "0:52"}.get)
    assert row == {
        "send_ts_ns": 100, "end_ts_ns": 350, "duration_ns": 250, "ongoing": False,
        "connection": 52, "bdi": "0:52", "unique": 9, "opcode": 16, "opcode_name": "WRITE",
        "len": 4096, "error": -5, "pid": 1, "tgid": 1, "comm": "kworker/u4:1", "end_pid": 2,
        "end_tgid": 2, "end_comm": "python"}
    assert set(row) == set(TABLES["requests"].names)


def test_throttle_and_vm_event_rows() -> None:
    throttle = _event("throttle_event", pid=3, tgid=3, ts_ns=1, pause_ms=-2, dirtied=8,
                      comm=b"dd", bdi=b"0:52")
    kind, decoded = _decoded(throttle)
    row = event_row(kind, decoded, lambda c: None)
    assert set(row) == set(TABLES["throttle"].names)
    assert (row["pause_ms"], row["dirtied"], row["bdi"], row["wb_dirty"]) == (-2, 8, "0:52", 0)
    consts = header_defs().constants
    for paired, duration in ((1, 40), (0, None)):
        vm = _event("vm_event", vm_kind=consts["VM_COMPACT"], ts_ns=5, duration_ns=40,
                    paired=paired, status=2, comm=b"kcompactd0")
        kind, decoded = _decoded(vm)
        row = event_row(kind, decoded, lambda c: None)
        assert set(row) == set(TABLES["vm"].names)
        assert (row["kind"], row["duration_ns"], row["status"], row["comm"]) == (
            "compaction", duration, 2, "kcompactd0")
    unknown = _event("vm_event", vm_kind=99)
    kind, decoded = _decoded(unknown)
    assert event_row(kind, decoded, lambda c: None)["kind"] == "vm99"


def test_short_and_unknown_records_are_not_decoded() -> None:
    event = _event("wait_event")
    buffer = ctypes.create_string_buffer(bytes(event), ctypes.sizeof(event))
    assert decode(ctypes.addressof(buffer), ctypes.sizeof(event) - 1) is None
    ctypes.c_uint32.from_buffer(buffer).value = 999
    assert decode(ctypes.addressof(buffer), ctypes.sizeof(event)) is None


def test_meta_declaration_gives_docs_checks_and_new_metas() -> None:
    assert list(META_KEYS) == [k.key for k in META]
    assert set(META_SPEC) <= set(META_KEYS)
    meta = initial_meta(host="h", kernel_release="r", plan="tracepoint", start_monotonic_ns=1,
                        start_epoch_ns=2)
    assert "tables" not in meta and "vmstat" not in meta and meta["complete"] is False
    assert meta["lost_events"] == {"total": 0, "per_cpu": [], "by_kind": {}}
    meta["lost_events"]["total"] = 5  # defaults are copies
    assert initial_meta(host="h", kernel_release="r", plan="p", start_monotonic_ns=1,
                        start_epoch_ns=2)["lost_events"]["total"] == 0
    with pytest.raises(ValueError, match="needs host"):
        initial_meta(kernel_release="r", plan="p", start_monotonic_ns=1, start_epoch_ns=2)
    with pytest.raises(ValueError, match="no key hots"):
        initial_meta(hots="h")
    synthetic = make_meta()
    assert set(synthetic) <= set(META_KEYS) and synthetic["complete"] is True


def test_part_names() -> None:
    assert part_name("waits", 1) == "waits/part-000001.parquet"


# --- one declaration per table and per tracepoint group: every mapping covers them -----------

def test_every_table_is_declared_once_and_its_mappings_cover_it() -> None:
    assert list(TABLE_SPECS) == list(TABLES)
    for table, spec in TABLE_SPECS.items():
        names = set(TABLES[table].names)
        assert spec.required and set(spec.required) <= names, table
        assert set(spec.synthetic) <= names, table
    assert REQUIRED_COLUMNS == {t: s.required for t, s in TABLE_SPECS.items()}
    assert sorted(BIG_TABLES + SMALL_TABLES) == sorted(TABLES)
    assert set(BIG_TABLES) == {t for t, s in TABLE_SPECS.items() if s.big}
    assert set(READ_COLUMNS) == set(BIG_TABLES)
    assert {kind.table for kind in EVENT_KINDS} | {"stacks"} == set(TABLES)


def test_every_event_kind_builds_its_whole_row() -> None:
    """A column no same-named struct field fills has a derivation (tracers/rows.py)."""
    structs = header_defs().structs
    for kind in EVENT_KINDS:
        fields = {name for name, _ in structs[kind.struct]._fields_}
        unfilled = set(TABLES[kind.table].names) - fields
        assert not unfilled or kind.table in _DERIVED, f"{kind.table}: {sorted(unfilled)}"


def test_every_table_has_its_questions_exported() -> None:
    """Each table's home module holds questions that read it, all exported by the package."""
    for table, spec in TABLE_SPECS.items():
        assert spec.home in analysis._HOME, table
        module = importlib.import_module(f"fusewb.analysis.{spec.home}")
        questions = {name for name in module.__all__
                     if hasattr(getattr(module, name), "REQUIRES")}
        assert any(table in getattr(module, q).REQUIRES for q in questions), table
        assert questions <= set(analysis.__all__), (spec.home, questions - set(analysis.__all__))
    assert sorted(analysis.__all__) == sorted(analysis._MODULE_OF)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_table_reads_on_every_engine(tmp_path, engine: str) -> None:
    """One row in every declared table: each engine reads each one, and raises no
    INCOMPLETE_CAPTURE for a table it did not know."""
    one_row = {table: {column: [START_NS + 1] if column.endswith("ts_ns") else [None]
                       for column in spec.required} for table, spec in TABLE_SPECS.items()}
    one_row["waits"] = {"ts_ns": [START_NS + 1], "duration_ns": [5]}
    one_row["requests"].update(end_ts_ns=[START_NS + 6], duration_ns=[5])
    one_row["vm"]["kind"] = ["direct_reclaim"]
    one_row["stacks"] = {"stack_id": [-1], "frames": [["folio_wait_writeback"]]}
    folder = write_capture(tmp_path / "c", **one_row)
    cap = load_capture(folder)
    scanned = scan(cap, engine=engine)
    assert scanned.rows == {("synthetic", table): 1 for table in TABLES}
    assert not scanned.damage.get("synthetic")
    raised = flags(cap, scan=scanned)
    assert "INCOMPLETE_CAPTURE" not in set(raised["flag"].astype(str))
    assert not raised.attrs["not_checked"]


def test_every_tracepoint_is_declared_once_in_a_group() -> None:
    tracepoints = [tp for group in TRACEPOINT_GROUPS for tp in group.tracepoints]
    assert len(tracepoints) == len(set(tracepoints)) and TRACEPOINTS == tracepoints
    for group in TRACEPOINT_GROUPS:
        assert set(group.fields) <= set(group.tracepoints), group
        assert group.define in HEADER.read_text(), f"{group.define} undocumented in fusewb.h"
        if group.table is not None:  # its events are told apart by the kind's probe names
            probes = event_kind(group.table).probes
            assert all(any(p in tp for p in probes) for tp in group.tracepoints), group
        for fields in group.fields.values():
            for column in filter(None, fields.values()):
                table, name = column.split(".")
                assert table == group.table and name in TABLES[table].names, column
    optional = [(list(g.tracepoints), g.define) for g in TRACEPOINT_GROUPS if g.optional]
    assert _OPTIONAL_TRACEPOINTS == optional
    assert {(f.tracepoint, f.names[0]) for f in TRACEPOINT_FIELDS} == {
        (tp, spec.split("|")[0]) for g in TRACEPOINT_GROUPS for tp, fields in g.fields.items()
        for spec in fields}


def test_every_probe_name_is_declared_once() -> None:
    """The fuse.ko functions behind waits and requests: one list each, in contract/events.py."""
    for fn in FUSE_WAIT_FUNCTIONS:
        assert fn in event_kind("waits").probes and fn in KERNEL_FUNCTIONS
    assert all(fn in KERNEL_FUNCTIONS for fn in REQUEST_KPROBES)
    assert len(KERNEL_FUNCTIONS) == len(set(KERNEL_FUNCTIONS))
    lost = header_defs().names("EV_")  # the lost-event counters are indexed by the kind's id
    assert set(lost.values()) == {kind.define[3:].lower() for kind in EVENT_KINDS}
    assert max(lost) < header_defs().constants["NR_EV_IDS"]


def test_analyze_help_names_every_flag() -> None:
    """``fusewb analyze --help`` lists the flags without importing pandas: the declared ones."""
    from fusewb.analysis.cli import analyze  # noqa: PLC0415
    from fusewb.analysis.findings import FLAG_NAMES  # noqa: PLC0415

    listed = re.search(r"Flags: ([A-Z_,\s]+)\.", analyze.help or "")
    assert listed and [name.strip() for name in listed.group(1).split(",")] == FLAG_NAMES


def test_every_vm_kind_has_one_tracepoint_group() -> None:
    groups = {g.define: g for g in TRACEPOINT_GROUPS}
    for kind in VM_EVENT_KINDS:
        assert groups[kind.group].table == "vm", kind
    assert len({kind.group for kind in VM_EVENT_KINDS}) == len(VM_EVENT_KINDS)
