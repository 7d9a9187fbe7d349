"""The tracer's rows-to-Arrow conversion (tracers/arrow_rows.py) against pyarrow's own
``Table.from_pylist`` for every capture table, and the reason it exists: writing a capture part
does not import pandas."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusewb.contract.schema import TABLES
from fusewb.tracers.arrow_rows import table_from_rows

_VALUES = {
    pa.int32(): st.integers(-(1 << 31), (1 << 31) - 1),
    pa.int64(): st.integers(-(1 << 63), (1 << 63) - 1),
    pa.bool_(): st.booleans(),
    pa.string(): st.text(max_size=12),
    pa.list_(pa.string()): st.lists(st.one_of(st.none(), st.text(max_size=8)), max_size=4),
}


def _rows(schema: pa.Schema) -> st.SearchStrategy[list[dict]]:
    """Rows of ``schema``: each field present with a value, present as None, or absent."""
    field_values = {field.name: st.one_of(st.none(), _VALUES[field.type]) for field in schema}
    row = st.fixed_dictionaries({}, optional=field_values)
    return st.lists(row, max_size=40)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_rows_convert_as_from_pylist(table: str) -> None:
    schema = TABLES[table]

    @settings(max_examples=60, deadline=None)
    @given(_rows(schema))
    def check(rows: list[dict]) -> None:
        mine = table_from_rows(rows, schema)
        assert mine.equals(pa.Table.from_pylist(rows, schema=schema))

    check()


def test_every_capture_column_type_converts() -> None:
    types = {field.type for schema in TABLES.values() for field in schema}
    assert types <= set(_VALUES), f"no conversion test for {types - set(_VALUES)}"


def test_out_of_range_and_unknown_types_raise() -> None:
    with pytest.raises(OverflowError):
        table_from_rows([{"x": 1 << 40}], pa.schema([pa.field("x", pa.int32())]))
    with pytest.raises(TypeError, match="no row conversion"):
        table_from_rows([{"x": 1.5}], pa.schema([pa.field("x", pa.float64())]))


def test_writing_a_part_does_not_import_pandas(tmp_path) -> None:
    """pyarrow's own conversions import pandas (about 40 MiB) when it is installed."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from fusewb.tracers.capture import CaptureWriter
        writer = CaptureWriter(Path({str(tmp_path / 'cap')!r}), {{"schema_version": 0}})
        writer.add("requests", {{"send_ts_ns": 1, "opcode_name": "WRITE", "ongoing": False}})
        writer.add("stacks", {{"stack_id": 3, "frames": ["a", "b"]}})
        writer.flush()
        writer.close()
        print(sorted(m for m in sys.modules if m.split(".")[0] == "pandas"))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"
    assert sorted((tmp_path / "cap").glob("*/*.parquet")), "no part was written"
