"""docs/architecture.md "Where to add things" is true: in a copy of the tree, add a throwaway
event kind (struct, program, table, tracepoint, question), a tracepoint for an existing table and
a flag, each touching only the production files its row lists, and show that the rest of fusewb
follows (the registry tests pass on the copy, on every engine; the flag is raised). No kernel:
the BPF side is parsed, not compiled."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
# package -> folder, as pyproject.toml's package-dir maps them
PACKAGES = {"fusewb": "fusewb", "fusewb/bpf": "bpf", "fusewb/tracers": "tracers",
            "fusewb/fixtures": "fixtures", "fusewb/analysis": "analysis",
            "fusewb/contract": "contract"}

# (file, text it holds once, what replaces it); None: append (a new file is created).
Edit = tuple[str, str | None, str]


def after(path: str, anchor: str, text: str) -> Edit:
    return path, anchor, anchor + text

EVENT_KIND: list[Edit] = [
    after("bpf/fusewb.h", "#define EV_VM 4\n", "#define EV_DEMO 5\n"),
    ("bpf/fusewb.h", "#define NR_EV_IDS 5", "#define NR_EV_IDS 6"),
    after("bpf/fusewb.h", " *   VM_SHRINK_INACTIVE, VM_COMPACTION, VM_MIGRATE (1 single, 2 paired with _start)\n",
     " *   DEMO_EVENTS        the throwaway demo:demo_event tracepoint\n"),
    after("bpf/fusewb.h", "#ifndef FUSEWB_H\n#define FUSEWB_H\n",
     "\nstruct demo_event {\n    u32 kind;\n    u32 pid;\n    u32 tgid;\n    u32 pad;\n"
     "    u64 ts_ns;\n    u64 value;\n};\n"),
    ("bpf/demo.bpf.c", None,
     "/* demo.bpf.c: the throwaway event kind of tests/test_where_to_add.py. */\n"
     "TRACEPOINT_PROBE(demo, demo_event)\n{\n    struct demo_event e = {};\n"
     "    e.kind = EV_DEMO;\n    e.ts_ns = bpf_ktime_get_ns();\n    e.value = args->value;\n"
     "    if (events.ringbuf_output(&e, sizeof(e), 0))\n        count_lost(EV_DEMO);\n"
     "    return 0;\n}\n"),
    after("bpf/fusewb.bpf.c", '#include "vm.bpf.c"\n', '#if DEMO_EVENTS\n#include "demo.bpf.c"\n#endif\n'),
    after("contract/events.py", '    EventKind("EV_VM", "vm_event", "vm", ("vmscan", "migrate", "compaction")),\n',
     '    EventKind("EV_DEMO", "demo_event", "demo", ()),\n'),
    after("contract/schema.py", "TABLES: dict[str, pa.Schema] = {\n",
     '    "demo": pa.schema([pa.field("ts_ns", pa.int64()), pa.field("pid", pa.int32()),\n'
     '                       pa.field("tgid", pa.int32()), pa.field("value", pa.int64())]),\n'),
    after("contract/schema.py", "TABLE_SPECS: dict[str, TableSpec] = {\n",
     '    "demo": _spec(("ts_ns",), big=False, home="vm", pid=1, tgid=1),\n'),
    after("contract/tracepoints.py", "TRACEPOINT_GROUPS: tuple[TracepointGroup, ...] = (\n",
     '    _group(("demo:demo_event",), "DEMO_EVENTS", "demo", optional=True,\n'
     '           demo_event={"value": "demo.value"}),\n'),
    after("analysis/vm.py", "__all__ = [\n", '    "demo_events",\n'),
    after("analysis/vm.py", 'RECLAIM_KINDS = ["direct_reclaim", "memcg_reclaim", "shrink_inactive", "vmscan_throttled"]\n',
     '\n\n@requires("demo")\ndef demo_events(cap: Capture) -> pd.DataFrame:\n'
     '    """Columns: host, ts_ns, pid, tgid, value."""\n    return cap.table("demo")\n'),
    after("analysis/__init__.py", '    "vm": [', '"demo_events", '),
]

TRACEPOINT: list[Edit] = [
    after("contract/tracepoints.py", "TRACEPOINT_GROUPS: tuple[TracepointGroup, ...] = (\n",
     '    _group(("writeback:demo_pause",), "FUSE_DEMO_PAUSE", "throttle", optional=True,\n'
     '           demo_pause={"bdi": None, "pause": "throttle.pause_ms"}),\n'),
    after("bpf/fusewb.h", " *   VM_SHRINK_INACTIVE, VM_COMPACTION, VM_MIGRATE (1 single, 2 paired with _start)\n",
     " *   FUSE_DEMO_PAUSE    the throwaway writeback:demo_pause tracepoint\n"),
    ("bpf/throttle.bpf.c", None, "\n#if FUSE_DEMO_PAUSE\nTRACEPOINT_PROBE(writeback, demo_pause)\n"
     "{\n    return 0;\n}\n#endif\n"),
]

FLAG: list[Edit] = [
    after("analysis/findings.py", "FLAGS: list[Flag] = [\n",
     '    Flag(\n        name="DEMO_FLAG", raised_when="any dirty throttling", needs=("throttle",),\n'
     '        mechanism="a throwaway flag of tests/test_where_to_add.py",\n'
     '        severity=lambda rows, threshold_ms: "low",\n'
     '        evidence=lambda rows, threshold_ms: ["paused"] * len(rows),\n'
     '        rows=lambda cap, scan, threshold_ms: cap.table("throttle").assign(\n'
     '            count=1, duration_ms=1.0, total_ms=1.0, ongoing=False),\n    ),\n'),
    ("analysis/cli.py", "    Flags: BLOCKED_WAIT,", "    Flags: DEMO_FLAG, BLOCKED_WAIT,"),
]

PLACEHOLDERS = {"<kind>": "demo", "<home>": "vm", "<event kind>": "throttle"}


def _copy(base: Path) -> Path:
    """The production tree as the installed package lays it out, plus the registry tests."""
    for package, folder in PACKAGES.items():
        shutil.copytree(ROOT / folder, base / package,
                        ignore=shutil.ignore_patterns("__pycache__", "fusewb", "*.pyc")
                        if folder != "fusewb" else shutil.ignore_patterns("__pycache__"))
    (base / "tests").mkdir()
    (base / "tests" / "__init__.py").write_text("")
    shutil.copy(ROOT / "tests" / "test_event_registry.py", base / "tests")
    return base


def _apply(base: Path, edits: list[Edit]) -> set[str]:
    """Apply ``edits`` (paths as in the repository); the files they touched."""
    folder_of = {folder: package for package, folder in PACKAGES.items()}
    touched = set()
    for path, old, new in edits:
        folder, _, rest = path.partition("/")
        target = base / folder_of[folder] / rest
        source = target.read_text() if target.exists() else ""
        if old is None:
            target.write_text(source + new)
        else:
            assert source.count(old) == 1, f"{path}: {old!r}"
            target.write_text(source.replace(old, new))
        touched.add(path)
    return touched


def _documented(row: str) -> set[str]:
    """The production files the where-to-add row ``row`` lists (placeholders filled)."""
    text = DOC.read_text()
    line = next(line for line in text.splitlines() if line.startswith(f"| {row} |"))
    files = set()
    for name in re.findall(r"`([^`]+)`", line.split("|")[2]):  # the "touch" column
        for placeholder, value in PLACEHOLDERS.items():
            name = name.replace(placeholder, value)
        if re.fullmatch(r"(bpf|contract|analysis|tracers|fixtures|fusewb)/[\w.]+\.(py|c|h)", name):
            files.add(name)
    return files


def _run(base: Path, code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that imports fusewb from the copy."""
    prelude = f"import sys; sys.path.insert(0, {str(base)!r})\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                          timeout=280, cwd=base)


def _registry_tests(base: Path) -> None:
    result = _run(base, "import fusewb, pytest\n"
                        f"assert fusewb.__file__.startswith({str(base)!r}), fusewb.__file__\n"
                        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--noconftest',"
                        " '-o', 'addopts=', 'tests/test_event_registry.py']))")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


# where-to-add row -> (its change, whether the registry tests must pass on the copy, what must
# follow from it without another edit)
SCENARIOS: dict[str, tuple[list[Edit], bool, str]] = {
    "an event kind": (EVENT_KIND, True, """
from fusewb.tracers.features import TRACEPOINTS
from fusewb.tracers.plan import _OPTIONAL_TRACEPOINTS
from fusewb.analysis import demo_events
assert 'demo:demo_event' in TRACEPOINTS
assert (['demo:demo_event'], 'DEMO_EVENTS') in _OPTIONAL_TRACEPOINTS
assert demo_events.REQUIRES == ['demo']
"""),
    "a tracepoint": (TRACEPOINT, True, """
from fusewb.tracers.features import TRACEPOINTS
from fusewb.tracers.plan import _OPTIONAL_TRACEPOINTS
from fusewb.tracers.tpfields import select_fields
from fusewb.analysis.capture import TABLE_PROBES
assert 'writeback:demo_pause' in TRACEPOINTS
assert (['writeback:demo_pause'], 'FUSE_DEMO_PAUSE') in _OPTIONAL_TRACEPOINTS
assert select_fields({'writeback:demo_pause': ['bdi']}).absent_columns == {'throttle': ['pause_ms']}
assert 'demo_pause' in TABLE_PROBES['throttle']
"""),
    "a flag": (FLAG, True, """
from fusewb.analysis import flags, load_capture
from fusewb.analysis.findings import parse_flag_names
from fusewb.analysis.report import report_needs
from fusewb.analysis.synthetic import START_NS, write_capture
raised = flags(load_capture(write_capture('cap', throttle={'ts_ns': [START_NS + 1]})))
assert 'DEMO_FLAG' in set(raised['flag'].astype(str)), raised
assert parse_flag_names('demo_flag') == ['DEMO_FLAG']
assert 'throttle' in report_needs()
"""),
}


@pytest.mark.parametrize("row", list(SCENARIOS))
def test_a_change_needs_only_the_files_its_row_lists(tmp_path: Path, row: str) -> None:
    edits, registry, follows = SCENARIOS[row]
    base = _copy(tmp_path)
    touched = _apply(base, edits)
    assert touched == _documented(row)
    if registry:  # decoder, rows, capture reader, every engine, exports, plan, fields follow
        _registry_tests(base)
    result = _run(base, follows)
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"{row}: {len(touched)} files: {', '.join(sorted(touched))}")


@pytest.mark.parametrize("row", list(SCENARIOS))
def test_the_rows_name_existing_files(row: str) -> None:
    for name in _documented(row):
        if "demo" not in name:
            assert (ROOT / name).is_file(), name
