"""Tracepoint fields: which name each field fusewb reads has on the running kernel, read from
the tracepoint's tracefs ``format`` file, never from the kernel version.

Every field the BPF programs read (``args->...`` in ``bpf/``) is declared once, with its
tracepoint's group in :data:`fusewb.contract.tracepoints.TRACEPOINT_GROUPS`, with the names it has
had, newest first (:data:`TRACEPOINT_FIELDS` lists them) (``"wb_dirty|bdi_dirty"``:
``writeback:balance_dirty_pages`` says ``bdi_dirty`` on 6.1). Two kinds:

* a *column* field fills one capture column. The BPF side reads it as ``args->TPF_<EVENT>_<FIELD>``
  under ``#ifdef``: the plan defines ``TPF_...`` to the name found, or leaves it undefined when
  no name matches, and the capture records that column as absent (null values, listed in
  ``meta.json`` ``absent_columns``).
* a *required* field (a join key, the bdi the FUSE filter needs) is read by its one name; a
  tracepoint lacking one is not used at all (the plan skips it and says why).

So a field renamed or missing on some kernel costs a column (or, for a required field, that
tracepoint), never a compile error.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fusewb.contract.tracepoints import TRACEPOINT_GROUPS

__all__ = [
    "TracepointField",
    "FieldSelection",
    "TRACEPOINT_FIELDS",
    "parse_format",
    "read_fields",
    "select_fields",
]


@dataclass(frozen=True)
class TracepointField:
    """One field the BPF programs read from a tracepoint."""

    tracepoint: str  # "category:event"
    names: tuple[str, ...]  # newest first; names[0] is the name fusewb calls it by
    column: str | None  # "table.column" it fills; None: required (no tracepoint without it)

    @property
    def define(self) -> str | None:
        """The ``-D`` macro the BPF side reads the field through (column fields and renamed
        ones); None for a required field with one name (read as ``args-><name>``)."""
        if self.column is None and len(self.names) == 1:
            return None
        event = self.tracepoint.split(":", 1)[1]
        return f"TPF_{event}_{self.names[0]}".upper()


TRACEPOINT_FIELDS: list[TracepointField] = [
    TracepointField(tp, tuple(spec.split("|")), column)
    for group in TRACEPOINT_GROUPS
    for tp, fields in group.fields.items()
    for spec, column in fields.items()
]

_FIELD_LINE = re.compile(r"^\s*field:([^;]*);", re.M)
_FIELD_NAME = re.compile(r"(\w+)\s*(?:\[[^\]]*\])?\s*$")


def parse_format(text: str) -> list[str]:
    """The field names of a tracefs ``format`` file, in order, without the ``common_`` ones."""
    names = []
    for declaration in _FIELD_LINE.findall(text):
        match = _FIELD_NAME.search(declaration)
        if match and not match.group(1).startswith("common_"):
            names.append(match.group(1))
    return names


def read_fields(tracefs: Path, tracepoint: str) -> list[str] | None:
    """The field names of ``tracepoint`` ("category:event") on this kernel, None when its format
    file cannot be read (absent tracepoint)."""
    try:
        text = (tracefs / "events" / tracepoint.replace(":", "/") / "format").read_text()
    except OSError:
        return None
    return parse_format(text)


@dataclass
class FieldSelection:
    """The fields found for a set of tracepoints: the defines for the BPF side, and what is
    missing."""

    defines: dict[str, str] = field(default_factory=dict)  # TPF_... -> the field's name here
    renamed: dict[str, str] = field(default_factory=dict)  # "tp.field" -> older name used
    absent_columns: dict[str, list[str]] = field(default_factory=dict)  # table -> columns
    unusable: dict[str, list[str]] = field(default_factory=dict)  # tracepoint -> required missing


def select_fields(fields_by_tracepoint: Mapping[str, Collection[str]]) -> FieldSelection:
    """Choose, for each declared field of the given tracepoints, the first of its names the
    kernel has (``fields_by_tracepoint``: field names per tracepoint, from :func:`read_fields`
    or :func:`parse_format`). Tracepoints not given are not looked at."""
    selection = FieldSelection()
    for declared in TRACEPOINT_FIELDS:
        have = fields_by_tracepoint.get(declared.tracepoint)
        if have is None:
            continue
        found = next((name for name in declared.names if name in have), None)
        if found is None:
            if declared.column is None:
                selection.unusable.setdefault(declared.tracepoint, []).append(declared.names[0])
            else:
                table, column = declared.column.split(".", 1)
                selection.absent_columns.setdefault(table, []).append(column)
            continue
        if declared.define is not None:
            selection.defines[declared.define] = found
        if found != declared.names[0]:
            selection.renamed[f"{declared.tracepoint}.{declared.names[0]}"] = found
    return selection
