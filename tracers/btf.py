"""A small reader of the kernel's BTF (``/sys/kernel/btf/vmlinux``, and a module's split BTF such
as ``/sys/kernel/btf/fuse`` on top of it): struct member offsets, sizes and array lengths, and
function-prototype arities, the facts fusewb's BPF programs need and cannot take from the
(other-version) header tree bcc compiles against.

Only what the tracer asks for is decoded: the type section is walked once to index type records
by id and by name; members are decoded on demand. Anonymous struct/union members are searched
through, so ``member_offset("task_struct", "__state")`` works whatever the nesting.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BtfError", "Btf", "load_vmlinux_btf", "load_module_btf", "VMLINUX_BTF", "BTF_DIR"]

BTF_DIR = Path("/sys/kernel/btf")
VMLINUX_BTF = BTF_DIR / "vmlinux"

BTF_MAGIC = 0xEB9F
_KIND_INT, _KIND_PTR, _KIND_ARRAY, _KIND_STRUCT, _KIND_UNION, _KIND_ENUM = 1, 2, 3, 4, 5, 6
_KIND_TYPEDEF, _KIND_FUNC, _KIND_FUNC_PROTO = 8, 12, 13
# Bytes of kind-specific data after the 12-byte common record: (fixed, per vlen item).
_EXTRA: dict[int, tuple[int, int]] = {
    1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0), 8: (0, 0),
    9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0), 15: (0, 12),
    16: (0, 0), 17: (4, 0), 18: (0, 0), 19: (0, 12),
}
_QUALIFIERS = {9, 10, 11, 18}  # volatile, const, restrict, type_tag


class BtfError(Exception):
    """The BTF blob is missing, malformed, or lacks the asked-for type or member."""


@dataclass
class Btf:
    """Parsed BTF: type records by id and by (name) for named types."""

    data: bytes
    type_off: int
    str_off: int
    offsets: list[int] = field(default_factory=list)  # id - first_id -> byte offset of its record
    by_name: dict[str, list[int]] = field(default_factory=dict)
    base: Btf | None = None  # split BTF (a module's): the vmlinux BTF its ids and strings extend
    first_id: int = 0
    first_str: int = 0
    str_len: int = 0

    def _owner(self, type_id: int) -> Btf:
        return self.base._owner(type_id) if self.base is not None and type_id < self.first_id else self

    def _name(self, name_off: int) -> str:
        if self.base is not None and name_off < self.first_str:
            return self.base._name(name_off)
        start = self.str_off + name_off - self.first_str
        return self.data[start : self.data.index(b"\0", start)].decode()

    def _record(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(kind, vlen, kind_flag, size_or_type, offset of the kind data) of ``type_id``."""
        owner = self._owner(type_id)
        off = owner.offsets[type_id - owner.first_id]
        _name_off, info, size_or_type = struct.unpack_from("<III", owner.data, off)
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, size_or_type, off + 12

    def find(self, name: str, kinds: tuple[int, ...]) -> int:
        for type_id in self.by_name.get(name, []):
            if self._record(type_id)[0] in kinds:
                return type_id
        if self.base is not None:
            return self.base.find(name, kinds)
        raise BtfError(f"BTF has no type {name!r}")

    def func_id(self, name: str) -> int:
        """The id of function ``name`` (a scan: functions are not indexed by name)."""
        encoded = name.encode() + b"\0"
        for index, off in enumerate(self.offsets):
            name_off, info = struct.unpack_from("<II", self.data, off)
            if (info >> 24) & 0x1F != _KIND_FUNC or not name_off or not (self.first_id or index):
                continue
            if name_off < self.first_str:  # a split BTF's record naming a string of its base
                if self._name(name_off) == name:
                    return self.first_id + index
            elif self.data.startswith(encoded, self.str_off + name_off - self.first_str):
                return self.first_id + index
        if self.base is not None:
            return self.base.func_id(name)
        raise BtfError(f"BTF has no function {name!r}")

    def _members(self, type_id: int) -> list[tuple[str, int, int]]:
        """(name, member type id, bit offset) of a struct or union."""
        kind, vlen, kind_flag, _size, data_off = self._record(type_id)
        if kind not in (_KIND_STRUCT, _KIND_UNION):
            raise BtfError(f"BTF type {type_id} is not a struct or union")
        owner = self._owner(type_id)
        out = []
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", owner.data, data_off + 12 * i)
            bits = moff & 0xFFFFFF if kind_flag else moff
            out.append((owner._name(name_off) if name_off else "", mtype, bits))
        return out

    def _strip(self, type_id: int) -> int:
        """Skip typedefs and qualifiers."""
        while True:
            kind, _vlen, _kf, size_or_type, _ = self._record(type_id)
            if kind == _KIND_TYPEDEF or kind in _QUALIFIERS:
                type_id = size_or_type
            else:
                return type_id

    def _member_bits(self, type_id: int, member: str) -> int | None:
        for name, mtype, bits in self._members(type_id):
            if name == member:
                return bits
            if not name:
                inner = self._strip(mtype)
                if self._record(inner)[0] in (_KIND_STRUCT, _KIND_UNION):
                    found = self._member_bits(inner, member)
                    if found is not None:
                        return bits + found
        return None

    def _member_type(self, type_id: int, member: str) -> int | None:
        for name, mtype, _bits in self._members(type_id):
            if name == member:
                return mtype
            if not name:
                inner = self._strip(mtype)
                if self._record(inner)[0] in (_KIND_STRUCT, _KIND_UNION):
                    found = self._member_type(inner, member)
                    if found is not None:
                        return found
        return None

    def _walk(self, struct_name: str, member: str) -> tuple[int, int]:
        """(byte offset, type id) of ``member`` in ``struct struct_name``; a dotted path goes
        through nested struct members."""
        type_id = self.find(struct_name, (_KIND_STRUCT,))
        total, mtype = 0, type_id
        parts = member.split(".")
        for depth, part in enumerate(parts):
            bits = self._member_bits(type_id, part)
            inner = self._member_type(type_id, part)
            if bits is None or inner is None:
                raise BtfError(f"struct {struct_name} has no member {member!r} in BTF")
            if bits % 8:
                raise BtfError(f"{struct_name}.{member} is a bitfield")
            total += bits // 8
            mtype = self._strip(inner)
            if depth + 1 < len(parts):
                if self._record(mtype)[0] not in (_KIND_STRUCT, _KIND_UNION):
                    raise BtfError(f"{struct_name}.{'.'.join(parts[: depth + 1])} is not a struct")
                type_id = mtype
        return total, mtype

    def _size(self, type_id: int) -> int:
        """Bytes of a (stripped) type: ints, enums, structs, unions, pointers and arrays."""
        kind, _vlen, _kf, size_or_type, data_off = self._record(type_id)
        if kind in (_KIND_INT, _KIND_ENUM, _KIND_STRUCT, _KIND_UNION):
            return size_or_type
        if kind == _KIND_PTR:
            return 8
        if kind == _KIND_ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._owner(type_id).data, data_off)
            return nelems * self._size(self._strip(elem))
        raise BtfError(f"BTF type {type_id} (kind {kind}) has no size fusewb can take")

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of ``member`` in ``struct struct_name`` (anonymous members searched);
        a dotted path (``"in.h.unique"``) goes through nested struct members."""
        return self._walk(struct_name, member)[0]

    def member_size(self, struct_name: str, member: str) -> int:
        """Bytes of ``member`` (a dotted path as for member_offset); a whole array for one."""
        return self._size(self._walk(struct_name, member)[1])

    def array_length(self, struct_name: str, member: str) -> int:
        """Elements of the array ``member``; BtfError when it is not an array."""
        type_id = self._walk(struct_name, member)[1]
        kind, _vlen, _kf, _size, data_off = self._record(type_id)
        if kind != _KIND_ARRAY:
            raise BtfError(f"{struct_name}.{member} is not an array")
        return struct.unpack_from("<III", self._owner(type_id).data, data_off)[2]

    def func_proto_arity(self, typedef_name: str) -> int:
        """Parameter count of the function type a typedef (of a pointer) names, e.g.
        ``btf_trace_sched_switch`` (its first parameter is the ``void *`` context)."""
        type_id = self._strip(self.find(typedef_name, (_KIND_TYPEDEF,)))
        kind, _vlen, _kf, size_or_type, _ = self._record(type_id)
        if kind == _KIND_PTR:
            type_id = self._strip(size_or_type)
        kind, vlen, _kf, _s, _ = self._record(type_id)
        if kind != _KIND_FUNC_PROTO:
            raise BtfError(f"{typedef_name} is not a function type in BTF")
        return vlen


def parse_btf(data: bytes, base: Btf | None = None) -> Btf:
    """Index a BTF blob (header, type and string sections); ``base`` for a split (module) BTF,
    whose type ids and string offsets continue those of the base."""
    if len(data) < 24:
        raise BtfError("BTF blob too short")
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != BTF_MAGIC:
        raise BtfError("not a BTF blob (bad magic)")
    type_off, type_len, str_off, _str_len = struct.unpack_from("<IIII", data, 8)
    if base is None:
        btf = Btf(data, hdr_len + type_off, hdr_len + str_off, offsets=[0])  # id 0 is void
    else:
        btf = Btf(data, hdr_len + type_off, hdr_len + str_off, base=base,
                  first_id=base.first_id + len(base.offsets), first_str=base.first_str + base.str_len)
    btf.str_len = _str_len
    pos, end = btf.type_off, btf.type_off + type_len
    while pos < end:
        name_off, info = struct.unpack_from("<II", data, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        type_id = btf.first_id + len(btf.offsets)
        btf.offsets.append(pos)
        if name_off and kind in (_KIND_STRUCT, _KIND_UNION, _KIND_TYPEDEF, _KIND_ENUM):
            btf.by_name.setdefault(btf._name(name_off), []).append(type_id)
        try:
            fixed, per_item = _EXTRA[kind]
        except KeyError:
            raise BtfError(f"unknown BTF kind {kind} at type {type_id}") from None
        pos += 12 + fixed + per_item * vlen
    return btf


def load_vmlinux_btf(path: Path = VMLINUX_BTF) -> Btf:
    """The running kernel's BTF (or the vmlinux BTF at ``path``); BtfError when it is absent or
    unreadable. The running kernel's is parsed once per process: it cannot change while it runs.
    Callers must not modify the result."""
    return _running_kernel_btf() if path == VMLINUX_BTF else _parse_file(path)


@functools.cache
def _running_kernel_btf() -> Btf:
    return _parse_file(VMLINUX_BTF)


def _parse_file(path: Path, base: Btf | None = None) -> Btf:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BtfError(f"cannot read {path}: {exc.strerror}") from None
    return parse_btf(data, base)


SYS_MODULE = Path("/sys/module")


def load_module_btf(module: str) -> Btf:
    """A module's BTF (``/sys/kernel/btf/<module>``) on top of vmlinux's; a built-in module's
    types are in vmlinux's own BTF, which is returned then. BtfError when neither has them."""
    path = BTF_DIR / module
    if not path.exists():
        if (SYS_MODULE / module / "initstate").exists():  # loaded as a module, not built in
            raise BtfError(f"the {module} module has no BTF on this kernel (module BTF came with "
                           f"CONFIG_DEBUG_INFO_BTF_MODULES in 5.11)")
        return load_vmlinux_btf()
    return _parse_file(path, base=load_vmlinux_btf())
