"""Tables for people: human units, inode numbers as the kernel prints them, columns that carry
one value named once; the JSON keeps every column."""

from __future__ import annotations

from fusewb.analysis.tables import QUESTIONS, Column, kernel_ino, people_rows

COLUMNS = (Column("host", "host"), Column("mount", "mount"), Column("path", "path"),
           Column("ino", "inode", "ino"), Column("max_ms", "max", "ms"),
           Column("bytes", "bytes", "bytes"), Column("ongoing", "still going", "bool"))


def test_kernel_ino() -> None:
    assert kernel_ino(2) == 2 and kernel_ino(None) is None
    # st_ino 2**63 + 5 (a 64-bit hash, as rclone and mergerfs make them), stored as int64
    assert kernel_ino(2**63 + 5 - 2**64) == 9223372036854775813


def test_people_rows_hide_one_valued_context_and_use_human_units() -> None:
    rows = [{"host": "vm", "mount": "/mnt/x", "path": "fsync", "ino": -2**63, "max_ms": 4263.2,
             "bytes": 3 << 20, "ongoing": True},
            {"host": "vm", "mount": None, "path": "close", "ino": 7, "max_ms": 0.4,
             "bytes": 512, "ongoing": False}]
    table = people_rows(rows, COLUMNS)
    assert table.heads == ["path", "inode", "max", "bytes", "still going"]
    assert table.same == ["host vm", "mount /mnt/x"]
    assert table.rows == [["fsync", "9223372036854775808", "4.26 s", "3.0 MiB", "yes"],
                          ["close", "7", "0.40 ms", "512 bytes", ""]]


def test_columns_that_differ_stay_and_every_question_says_what_it_answers() -> None:
    rows = [{"host": "a", "path": "fsync"}, {"host": "b", "path": "fsync"}]
    table = people_rows(rows, COLUMNS)
    assert table.heads == ["host", "path"] and table.same == []
    assert all(q.answers.endswith(("?", ".")) and q.columns for q in QUESTIONS)
