"""Bad captures, all of them: every file of a capture corrupted every way.

Hypothesis draws a capture, a file or table folder in it and a corruption: random bytes,
truncation, bit flips, JSON values of the wrong type, Parquet columns of the wrong type, dropped
or extra, a folder where a file belongs and the reverse, a FIFO, a symlink to ``/dev/zero`` or
``/dev/null``, a 10 GiB sparse file. The damaged copy (in a temporary folder) is analysed through
the Python API (``render_report``, with the pandas and the streaming engine: the same outcome)
and through ``fusewb analyze`` in-process; a few cases run as
a subprocess, under a timeout. Either way the outcome is exit 2 with one line and no traceback,
or a report that is the undamaged capture's or says what was lost in INCOMPLETE_CAPTURE.

The captures: ``synthetic`` (``synthetic_capture``, several parts per table), ``cases`` (the
hand-made capture raising every flag, one part per table), ``real`` (written by the tracer's own
``CaptureWriter``: every table folder, two parts per table, meta.json rewritten at each flush)
and ``hosts`` (a folder holding ``real`` and ``synthetic`` as two hosts).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusewb.analysis.cli import analyze
from fusewb.analysis.report import render_report
from fusewb.analysis.synthetic import synthetic_capture, write_capture
from fusewb.contract.errors import FusewbError
from fusewb.contract.schema import TABLES
from fusewb.tracers.capture import CaptureWriter
from tests.analysis_cases import everything_capture

__all__: list[str] = []

KINDS = ("synthetic", "cases", "real", "hosts")
HUGE = 10 << 30  # a sparse file of 10 GiB costs no disk
EXAMPLES = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
Report = dict[str, Any]
Draw = Callable[[st.SearchStrategy[Any]], Any]


@dataclass(frozen=True)
class Pristine:
    """An undamaged capture, the report of it, and what in it can be damaged."""

    path: Path
    report: Report
    files: list[str]  # meta.json files and Parquet parts, relative to path
    parts: list[str]
    tables: list[str]  # table folders


# --- the captures --------------------------------------------------------------------------

def _real_capture(folder: Path, scratch: Path) -> Path:
    """The hand-made capture's rows written again by the tracer's CaptureWriter, in two flushes."""
    source = everything_capture(scratch)
    meta = json.loads((source / "meta.json").read_text())
    for key in ("schema_version", "complete", "tables"):
        meta.pop(key)
    rows = {name: pq.read_table(source / name).to_pylist() for name in TABLES
            if (source / name).is_dir()}
    writer = CaptureWriter(folder, meta)
    for half in (0, 1):
        for name, table_rows in rows.items():
            cut = len(table_rows) // 2
            for row in table_rows[:cut] if half == 0 else table_rows[cut:]:
                writer.add(name, row)
        writer.flush()
    writer.close()
    return folder


def _build(kind: str, base: Path) -> Path:
    if kind == "synthetic":
        return synthetic_capture(base / "synthetic", 240, 180, part_rows=80, duration_s=5.0)
    if kind == "cases":
        return everything_capture(base / "cases")
    if kind == "real":
        return _real_capture(base / "real", base / "real-source")
    folder = base / "hosts"
    _real_capture(folder / "a", base / "hosts-source")
    synthetic_capture(folder / "b", 120, part_rows=50, duration_s=5.0)
    return folder


def _api_report(path: Path, engine: str = "pandas") -> Report | str:
    """The report of ``path`` through the Python API, or the one-line message it failed with."""
    try:
        return render_report(path, "text", engine=engine).report
    except FusewbError as exc:
        return str(exc)


def _pristine(kind: str, base: Path) -> Pristine:
    path = _build(kind, base)
    report = _api_report(path)
    assert isinstance(report, dict), report
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    return Pristine(
        path=path, report=report, files=files,
        parts=[f for f in files if f.endswith(".parquet")],
        tables=sorted(str(p.relative_to(path)) for p in path.rglob("*")
                      if p.is_dir() and p.name in TABLES),
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pristine]:
    base = tmp_path_factory.mktemp("pristine")
    return {kind: _pristine(kind, base) for kind in KINDS}


@contextmanager
def damaged_copy(capture: Pristine) -> Iterator[Path]:
    """A copy of ``capture`` in a temporary folder, removed afterwards whatever it became."""
    with tempfile.TemporaryDirectory(prefix="fusewb-damaged-") as scratch:
        copy = Path(scratch) / "capture"
        shutil.copytree(capture.path, copy, symlinks=True)
        yield copy


# --- the corruptions -----------------------------------------------------------------------

def _replace(path: Path) -> None:
    """Make room for something else at ``path`` (a file or a folder)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def random_bytes(path: Path, draw: Draw) -> None:
    path.write_bytes(draw(st.binary(max_size=2048)))


def truncate(path: Path, draw: Draw) -> None:
    os.truncate(path, draw(st.integers(0, path.stat().st_size - 1)))


def flip_bits(path: Path, draw: Draw) -> None:
    data = bytearray(path.read_bytes())
    flips = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)),
                          min_size=1, max_size=8))
    for offset, bit in flips:
        data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def sparse_huge(path: Path, draw: Draw) -> None:
    os.truncate(path, HUGE)


def device_link(path: Path, draw: Draw) -> None:
    target = draw(st.sampled_from(["/dev/zero", "/dev/null"]))
    _replace(path)
    path.symlink_to(target)


def fifo(path: Path, draw: Draw) -> None:
    _replace(path)
    os.mkfifo(path)


def directory(path: Path, draw: Draw) -> None:
    _replace(path)
    path.mkdir()
    if draw(st.booleans()):
        (path / "part-000001.parquet").write_bytes(b"PAR1")


def file_for_folder(path: Path, draw: Draw) -> None:
    _replace(path)
    path.write_bytes(draw(st.binary(max_size=64)))


# Corruptions that destroy a file, or a table folder, whatever it held.
FILE_CORRUPTIONS = [random_bytes, truncate, sparse_huge, device_link, fifo, directory]
FOLDER_CORRUPTIONS = [file_for_folder, device_link, fifo]

JSON_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "integer": st.integers(-(1 << 62), 1 << 62),
    "huge integer": st.integers(1 << 63, 1 << 90) | st.integers(-(1 << 90), -(1 << 63) - 1),
    "number": st.floats(allow_nan=True, allow_infinity=True),
    "string": st.text(max_size=12),
    "array": st.lists(st.integers() | st.text(max_size=4), max_size=3),
    "object": st.dictionaries(st.text(max_size=6), st.integers() | st.none(), max_size=3),
}


def _json_kind(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else "boolean"
    if isinstance(value, int):
        return "integer" if abs(value) < 1 << 62 else "huge integer"
    kinds = {float: "number", str: "string", list: "array", dict: "object"}
    return kinds[type(value)]


def _json_places(value: Any, place: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value (the root is ``()``)."""
    yield place
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, item in items:
        yield from _json_places(item, (*place, key))


def wrong_json_type(path: Path, draw: Draw) -> None:
    """One value of meta.json (or the whole) replaced by a value of another JSON type."""
    meta = json.loads(path.read_text())
    place = draw(st.sampled_from(list(_json_places(meta))))
    holder, old = None, meta
    for key in place:
        holder, old = old, old[key]
    kind = draw(st.sampled_from([k for k in JSON_VALUES if k != _json_kind(old)]))
    new = draw(JSON_VALUES[kind])
    if holder is None:
        meta = new
    else:
        holder[place[-1]] = new
    path.write_text(json.dumps(meta, indent=1))


# Column types of another kind than any column of the capture schema may hold.
WRONG_TYPES: list[pa.DataType] = [
    pa.string(), pa.binary(), pa.float64(), pa.bool_(), pa.int64(), pa.timestamp("ns"),
    pa.list_(pa.int64()), pa.struct([("x", pa.int32())]), pa.null(),
]


def _family(arrow_type: pa.DataType) -> str:
    if pa.types.is_integer(arrow_type):
        return "integer"
    return "string" if pa.types.is_string(arrow_type) else str(arrow_type)


def _column_as(column: pa.ChunkedArray, arrow_type: pa.DataType) -> pa.ChunkedArray | pa.Array:
    """``column`` cast to ``arrow_type`` however lossy, or nulls of it when no cast exists."""
    try:
        return pc.cast(column, arrow_type, safe=False)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.nulls(len(column), arrow_type)


def column_of_wrong_type(path: Path, draw: Draw) -> None:
    table = pq.read_table(path)
    name = draw(st.sampled_from(table.column_names))
    index = table.column_names.index(name)
    family = _family(table.schema.field(name).type)
    arrow_type = draw(st.sampled_from([t for t in WRONG_TYPES if _family(t) != family]))
    pq.write_table(table.set_column(index, name, _column_as(table.column(name), arrow_type)), path)


def column_dropped(path: Path, draw: Draw) -> None:
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([draw(st.sampled_from(table.column_names))]), path)


def column_added(path: Path, draw: Draw) -> None:
    table = pq.read_table(path)
    name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in table.column_names))
    arrow_type = draw(st.sampled_from(WRONG_TYPES))
    values = _column_as(pa.chunked_array([pa.array(range(len(table)))]), arrow_type)
    pq.write_table(table.append_column(name, values), path)


COLUMN_CORRUPTIONS = [column_of_wrong_type, column_dropped, column_added]


def _odd_values(arrow_type: pa.DataType) -> st.SearchStrategy[Any]:
    """Values of ``arrow_type`` no tracer writes: nulls, the ends of its range, anything."""
    if pa.types.is_integer(arrow_type):  # signed, as in the capture schema
        high = (1 << arrow_type.bit_width - 1) - 1
        return st.none() | st.sampled_from([-high - 1, high, 0, -1]) | st.integers(-high - 1, high)
    if pa.types.is_boolean(arrow_type):
        return st.none() | st.booleans()
    if pa.types.is_string(arrow_type):
        return st.none() | st.text(max_size=8)
    return st.none() | st.lists(st.none() | st.text(max_size=8), max_size=3)


def odd_values(path: Path, draw: Draw) -> None:
    """Up to three columns of a Parquet part refilled with values of their type (see above)."""
    table = pq.read_table(path)
    names = draw(st.lists(st.sampled_from(table.column_names), min_size=1, max_size=3,
                          unique=True))
    for name in names:
        arrow_type = table.schema.field(name).type
        values = draw(st.lists(_odd_values(arrow_type), min_size=len(table), max_size=len(table)))
        table = table.set_column(table.column_names.index(name), name,
                                 pa.array(values, arrow_type))
    pq.write_table(table, path)


# --- running the analysis and judging the outcome -------------------------------------------

def _cli_report(path: Path) -> Report | str:
    """``fusewb analyze PATH --format json`` in-process: the report, or its one error line."""
    result = CliRunner().invoke(analyze, [str(path), "--format", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exc_info)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        return result.output
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _comparable(report: Report) -> Report:
    """``report`` without the paths that differ between a capture and its copy."""
    capture = dict(report["capture"], path=None,
                   sources=[dict(s, path=None) for s in report["capture"]["sources"]])
    return dict(report, capture=capture)


def _incomplete(report: Report) -> set[str]:
    return {f["evidence"] for f in report["flags"] if f["flag"] == "INCOMPLETE_CAPTURE"}


def analyse(path: Path) -> Report | str:
    """The outcome of analysing ``path``, the same through the API and the CLI, and with the
    streaming engine (which reads the parts batch by batch)."""
    api, cli = _api_report(path), _cli_report(path)
    streaming = _api_report(path, "streaming")
    assert (streaming if isinstance(streaming, str) else json.loads(json.dumps(streaming))) == (
        api if isinstance(api, str) else json.loads(json.dumps(api))), (api, streaming)
    if isinstance(api, str):
        assert "\n" not in api and "Traceback" not in api, api
        assert cli == f"Error: {api}\n", (api, cli)
        return api
    assert isinstance(cli, dict), cli
    assert _comparable(json.loads(json.dumps(api))) == _comparable(cli)
    return cli


def assert_intact_or_flagged(outcome: Report | str, capture: Pristine) -> None:
    """An error line, or the undamaged report, or one whose INCOMPLETE_CAPTURE tells more."""
    if isinstance(outcome, str):
        return
    if _comparable(outcome) != _comparable(capture.report):
        assert _incomplete(outcome) - _incomplete(capture.report), outcome["flags"]


# --- the properties ------------------------------------------------------------------------

@given(data=st.data(), kind=st.sampled_from(KINDS),
       corrupt=st.sampled_from(FILE_CORRUPTIONS))
@EXAMPLES
def test_destroyed_file(pristine: dict[str, Pristine], data: st.DataObject, kind: str,
                        corrupt: Callable[[Path, Draw], None]) -> None:
    """meta.json or a part destroyed: an error line, or INCOMPLETE_CAPTURE says what was lost
    (unless what was lost was nothing, as a newline cut off the end of meta.json)."""
    capture = pristine[kind]
    target = data.draw(st.sampled_from(capture.files), label="file")
    with damaged_copy(capture) as copy:
        corrupt(copy / target, data.draw)
        assert_intact_or_flagged(analyse(copy), capture)


@given(data=st.data(), kind=st.sampled_from(KINDS),
       corrupt=st.sampled_from(FOLDER_CORRUPTIONS))
@EXAMPLES
def test_table_folder_replaced(pristine: dict[str, Pristine], data: st.DataObject, kind: str,
                               corrupt: Callable[[Path, Draw], None]) -> None:
    """A table folder that is a file, a FIFO or a link to a device: an error line."""
    capture = pristine[kind]
    target = data.draw(st.sampled_from(capture.tables), label="table folder")
    with damaged_copy(capture) as copy:
        corrupt(copy / target, data.draw)
        assert_intact_or_flagged(analyse(copy), capture)


@given(data=st.data(), kind=st.sampled_from(KINDS),
       corrupt=st.sampled_from(COLUMN_CORRUPTIONS))
@EXAMPLES
def test_parquet_columns(pristine: dict[str, Pristine], data: st.DataObject, kind: str,
                         corrupt: Callable[[Path, Draw], None]) -> None:
    """A column of a wrong type or dropped loses the part; an extra column changes nothing."""
    capture = pristine[kind]
    target = data.draw(st.sampled_from(capture.parts), label="part")
    with damaged_copy(capture) as copy:
        corrupt(copy / target, data.draw)
        outcome = analyse(copy)
    if corrupt is column_added:
        assert isinstance(outcome, dict), outcome
        assert _comparable(outcome) == _comparable(capture.report)
    else:
        assert_intact_or_flagged(outcome, capture)
        assert isinstance(outcome, str) or _comparable(outcome) != _comparable(capture.report)


@given(data=st.data(), kind=st.sampled_from(KINDS))
@EXAMPLES
def test_meta_json_values_of_wrong_type(pristine: dict[str, Pristine], data: st.DataObject,
                                        kind: str) -> None:
    """An error line or a report: values the analysis does not read may be anything."""
    capture = pristine[kind]
    metas = [f for f in capture.files if f.endswith("meta.json")]
    with damaged_copy(capture) as copy:
        wrong_json_type(copy / data.draw(st.sampled_from(metas), label="meta"), data.draw)
        analyse(copy)


@given(data=st.data(), kind=st.sampled_from(KINDS), flips=st.booleans())
@EXAMPLES
def test_values_altered(pristine: dict[str, Pristine], data: st.DataObject, kind: str,
                        flips: bool) -> None:
    """Bit flips anywhere, or odd values in a part: a changed value cannot be told from a
    measured one, so any outcome but a traceback (or a warning: -W error) will do."""
    capture = pristine[kind]
    target = data.draw(st.sampled_from(capture.files if flips else capture.parts), label="file")
    with damaged_copy(capture) as copy:
        (flip_bits if flips else odd_values)(copy / target, data.draw)
        analyse(copy)


# --- a few cases as a real process, under a timeout ----------------------------------------

def _meta_binary(copy: Path) -> None:
    (copy / "meta.json").write_bytes(b"\xff\xfe\x00\x81 binary \xc3(")


def _meta_fifo(copy: Path) -> None:
    fifo(copy / "meta.json", lambda strategy: None)


def _meta_huge(copy: Path) -> None:
    sparse_huge(copy / "meta.json", lambda strategy: None)


def _meta_to_zero(copy: Path) -> None:
    (copy / "meta.json").unlink()
    (copy / "meta.json").symlink_to("/dev/zero")


def _part_to_zero(copy: Path) -> None:
    part = copy / "waits" / "part-000002.parquet"
    part.unlink()
    part.symlink_to("/dev/zero")


SUBPROCESS_CASES: dict[str, tuple[Callable[[Path], None], int, str]] = {
    "meta.json binary": (_meta_binary, 2, "not UTF-8"),
    "meta.json a FIFO": (_meta_fifo, 2, "a FIFO"),
    "meta.json 10 GiB sparse": (_meta_huge, 2, "10.0 GiB"),
    "meta.json -> /dev/zero": (_meta_to_zero, 2, "a character device"),
    "part -> /dev/zero": (_part_to_zero, 1, "waits/part-000002.parquet is not a regular file"),
}


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_subprocess_never_hangs_nor_tracebacks(pristine: dict[str, Pristine], case: str) -> None:
    damage, status, said = SUBPROCESS_CASES[case]
    env = dict(os.environ, PYTHONWARNINGS="error")
    with damaged_copy(pristine["real"]) as copy:
        damage(copy)
        done = subprocess.run(
            [sys.executable, "-W", "error", "-m", "fusewb.cli", "analyze", str(copy),
             "--format", "json", "--fail-on", "INCOMPLETE_CAPTURE"],
            capture_output=True, text=True, timeout=60, env=env,
        )
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    if status == 2:
        assert done.stdout == "" and done.stderr.count("\n") == 1
        assert done.stderr.startswith("Error: ") and said in done.stderr
    else:
        assert done.stderr == "fusewb analyze: failing because INCOMPLETE_CAPTURE raised\n"
        assert any(said in e for e in _incomplete(json.loads(done.stdout)))


def test_html_timeline_of_times_at_the_end_of_int64(tmp_path: Path) -> None:
    """A corrupt time near 2**63 in a killed capture: the timeline widens its bins, no hang."""
    last = (1 << 63) - 1
    requests = [{"send_ts_ns": 10**12, "duration_ns": 5, "end_ts_ns": last, "unique": 2},
                {"send_ts_ns": last, "duration_ns": 5, "ongoing": True, "unique": 4}]
    folder = write_capture(tmp_path / "c", {"end_monotonic_ns": None, "complete": False},
                           requests=requests)
    result = CliRunner().invoke(analyze, [str(folder), "--format", "html",
                                          "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "INCOMPLETE_CAPTURE" in (tmp_path / "r.html").read_text()


def test_html_report_of_a_damaged_capture(pristine: dict[str, Pristine]) -> None:
    with damaged_copy(pristine["synthetic"]) as copy:
        (copy / "requests" / "part-000002.parquet").write_bytes(b"PAR1 not really")
        out = copy.parent / "r.html"
        result = CliRunner().invoke(analyze, [str(copy), "--format", "html", "-o", str(out)])
        assert result.exit_code == 0, result.output
        page = out.read_text()
    assert "INCOMPLETE_CAPTURE" in page and "requests/part-000002.parquet" in page
