"""``read_kallsyms`` on made-up kallsyms text: clones, names that prefix others, module and
weak symbols, the range of a wait function, hidden addresses, an unreadable file."""

from __future__ import annotations

from pathlib import Path

from fusewb.tracers.kallsyms import read_kallsyms

TEXT = """\
ffffffff81000000 T first_fn
ffffffff81200000 t fuse_wait_on_page_writeback.part.0\t[fuse]
ffffffff81200100 T folio_wait_writeback
ffffffff81200180 D some_data
ffffffff81200200 T folio_wait_stable
ffffffff81300000 t fuse_flush_times.isra.0
ffffffff81300100 t fuse_flush_times
ffffffff81300200 W weak_fn
ffffffff81300300 t only_cold.cold
ffffffffa0001000 t fuse_writepage_end\t[fuse]
"""


def test_names_clones_and_the_wait_function_range(tmp_path: Path) -> None:
    path = tmp_path / "kallsyms"
    path.write_text(TEXT)
    found = read_kallsyms(["fuse_wait_on_page_writeback", "fuse_flush_times", "some_data",
                           "folio_wait", "first_fn", "weak_fn", "only_cold", "fuse_writepage_end"],
                          ["folio_wait_writeback", "wait_on_page_writeback"], path=path)
    assert found.names["fuse_wait_on_page_writeback"] == "fuse_wait_on_page_writeback.part.0"
    assert found.names["fuse_flush_times"] == "fuse_flush_times"  # its own body wins over a clone
    assert "some_data" not in found.names  # data, not text
    assert "folio_wait" not in found.names  # a prefix of other names, not a function here
    assert found.names["folio_wait_writeback"] == "folio_wait_writeback"
    assert found.names["first_fn"] == "first_fn" and found.names["weak_fn"] == "weak_fn"
    assert found.names["only_cold"] == "only_cold.cold"
    assert found.names["fuse_writepage_end"] == "fuse_writepage_end"  # a module's, "\t[fuse]"
    assert found.ranges == {"folio_wait_writeback": (0xFFFFFFFF81200100, 0xFFFFFFFF81200200)}


def test_hidden_addresses_give_names_without_ranges(tmp_path: Path) -> None:
    path = tmp_path / "kallsyms"
    path.write_text("".join(f"{0:016x} {line.split(' ', 1)[1]}\n" for line in TEXT.splitlines()))
    found = read_kallsyms([], ["folio_wait_writeback"], path=path)
    assert "folio_wait_writeback" in found.names and found.ranges == {}


def test_unreadable_file_gives_nothing(tmp_path: Path) -> None:
    found = read_kallsyms(["folio_wait_writeback"], ["folio_wait_writeback"], path=tmp_path / "absent")
    assert found.names == {} and found.ranges == {}
