"""Rows (dicts) to an Arrow table without pandas: the tracer's part writer.

``pyarrow.Table.from_pylist`` and every other ``pyarrow.array`` conversion import pandas the
first time they run when pandas is installed (pyarrow's pandas shim checks whether a value is a
pandas object), which costs the tracer about 40 MiB for the whole session. This module builds
each column from its Arrow buffers instead (values, validity bitmap, string offsets), for the
types capture tables use: ``int32``, ``int64``, ``bool``, ``string`` and ``list<string>``.

The result equals ``pa.Table.from_pylist(rows, schema=schema)`` for the rows the tracer makes
(tests/test_arrow_rows.py checks every capture table against it); a missing key is a null, as
there. It does not check value types as ``from_pylist`` does: an integer column takes what
numpy converts to an integer (``True``, and a float truncated, as ``from_pylist`` also does),
a bool column takes any value as its truth, a string column needs ``str``. The values are the
tracer's own (tracers/rows.py), of the types the schema names.
"""

from __future__ import annotations

import operator
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["table_from_rows"]

_INTEGERS = {pa.int32(): np.int32, pa.int64(): np.int64}


def _validity(values: list[Any]) -> tuple[pa.Buffer | None, int]:
    """The validity bitmap of ``values`` (None where every value is set) and its null count."""
    nulls = values.count(None)
    if nulls == 0:
        return None, 0
    present = np.fromiter(map(operator.is_not, values, repeat(None)), dtype=bool, count=len(values))
    return pa.py_buffer(np.packbits(present, bitorder="little")), nulls


def _integers(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    validity, nulls = _validity(values)
    if nulls:
        values = [0 if v is None else v for v in values]
    wide = np.array(values, dtype=np.int64)  # OverflowError beyond 64 bits
    dtype = _INTEGERS[arrow_type]
    if len(wide) and dtype is not np.int64 and (wide.min() < np.iinfo(dtype).min
                                                or wide.max() > np.iinfo(dtype).max):
        raise OverflowError(f"a value of {arrow_type} column is out of its range")
    data = wide.astype(dtype)
    return pa.Array.from_buffers(arrow_type, len(values), [validity, pa.py_buffer(data)],
                                 null_count=nulls)


def _booleans(values: list[Any]) -> pa.Array:
    validity, nulls = _validity(values)
    bits = np.packbits(np.array(values, dtype=bool), bitorder="little")  # None: False, masked
    return pa.Array.from_buffers(pa.bool_(), len(values), [validity, pa.py_buffer(bits)],
                                 null_count=nulls)


def _offsets(lengths: list[int]) -> pa.Buffer:
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    if len(ends) and ends[-1] > np.iinfo(np.int32).max:
        raise OverflowError("a part's column is over 2 GiB")
    return pa.py_buffer(np.concatenate(([0], ends)).astype(np.int32))


def _strings(values: list[Any]) -> pa.Array:
    validity, nulls = _validity(values)
    encoded = list(map(str.encode, ["" if v is None else v for v in values] if nulls else values))
    return pa.Array.from_buffers(pa.string(), len(values),
                                 [validity, _offsets([len(b) for b in encoded]),
                                  pa.py_buffer(b"".join(encoded))], null_count=nulls)


def _string_lists(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    validity, nulls = _validity(values)
    lists = [() if v is None else v for v in values]
    items = _strings([item for one in lists for item in one])
    return pa.Array.from_buffers(arrow_type, len(values),
                                 [validity, _offsets([len(one) for one in lists])],
                                 null_count=nulls, children=[items])


def _column(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    if values.count(None) == len(values):
        return pa.nulls(len(values), arrow_type)
    if arrow_type in _INTEGERS:
        return _integers(values, arrow_type)
    if arrow_type == pa.bool_():
        return _booleans(values)
    if arrow_type == pa.string():
        return _strings(values)
    if arrow_type == pa.list_(pa.string()):
        return _string_lists(values, arrow_type)
    raise TypeError(f"no row conversion for Arrow type {arrow_type}")


def table_from_rows(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """``rows`` as a table of ``schema``: each field's value from each row's key of that name
    (missing or None: null). Raises TypeError for a field type outside the capture's types,
    OverflowError for an integer its column cannot hold (or a column over 2 GiB)."""
    columns = [_column(list(map(dict.get, rows, repeat(field.name))), field.type) for field in schema]
    for array in columns:
        array.validate()
    return pa.Table.from_arrays(columns, schema=schema)
