"""Just enough ELF reading for the initrd: sections, the interpreter, needed libraries.

Kernel modules carry their dependencies in the `.modinfo` section; a program
needs its PT_INTERP loader and DT_NEEDED libraries, or nothing when static.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

_PT_INTERP = 3
_DT_NEEDED = 1


@dataclass(frozen=True)
class _Elf:
    data: bytes
    little: bool
    wide: bool  # ELFCLASS64

    def unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        return struct.unpack_from(("<" if self.little else ">") + fmt, self.data, offset)

    def program_headers(self) -> Iterator[tuple[int, int, int]]:
        """(type, file offset, file size) of each program header."""
        if self.wide:
            (phoff,) = self.unpack("Q", 0x20)
            phentsize, phnum = self.unpack("HH", 0x36)
        else:
            (phoff,) = self.unpack("I", 0x1C)
            phentsize, phnum = self.unpack("HH", 0x2A)
        for index in range(phnum):
            at = phoff + index * phentsize
            if self.wide:
                kind, _, offset, _, _, size = self.unpack("IIQQQQ", at)
            else:
                kind, offset, _, _, size = self.unpack("IIIII", at)
            yield kind, offset, size


def _elf(data: bytes) -> _Elf | None:
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    return _Elf(data, little=data[5] == 1, wide=data[4] == 2)


def elf_section(data: bytes, name: str) -> bytes | None:
    """The bytes of the ELF section `name`, or None (not ELF, no such section)."""
    elf = _elf(data)
    if elf is None:
        return None
    try:
        if elf.wide:
            (shoff,) = elf.unpack("Q", 0x28)
            shentsize, shnum, shstrndx = elf.unpack("HHH", 0x3A)
            header = "IIQQQQ"  # name, type, flags, addr, offset, size
        else:
            (shoff,) = elf.unpack("I", 0x20)
            shentsize, shnum, shstrndx = elf.unpack("HHH", 0x2E)
            header = "IIIIII"

        def section(index: int) -> tuple[int, int, int]:
            name_at, _, _, _, offset, size = elf.unpack(header, shoff + index * shentsize)
            return name_at, offset, size

        _, names_at, names_size = section(shstrndx)
        names = data[names_at : names_at + names_size]
        wanted = name.encode()
        for index in range(shnum):
            name_at, offset, size = section(index)
            if names[name_at : names.find(b"\0", name_at)] == wanted:
                return data[offset : offset + size]
    except struct.error:
        return None
    return None


def is_static_executable(data: bytes) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP): needs no libraries."""
    elf = _elf(data)
    if elf is None:
        return False
    try:
        kinds = [kind for kind, _, _ in elf.program_headers()]
    except struct.error:
        return False
    return bool(kinds) and _PT_INTERP not in kinds


@dataclass(frozen=True)
class ElfLinks:
    interpreter: str | None  # PT_INTERP; None: a static program
    needed: tuple[str, ...]  # DT_NEEDED sonames


def elf_links(data: bytes) -> ElfLinks | None:
    """The interpreter and needed libraries of an ELF file; None if it is not ELF."""
    elf = _elf(data)
    if elf is None:
        return None
    try:
        interpreter = next(
            (
                data[offset : offset + size].rstrip(b"\0").decode()
                for kind, offset, size in elf.program_headers()
                if kind == _PT_INTERP
            ),
            None,
        )
        dynamic = elf_section(data, ".dynamic") or b""
        strings = elf_section(data, ".dynstr") or b""
        entry = ("<" if elf.little else ">") + ("qQ" if elf.wide else "iI")
        step = struct.calcsize(entry)
        needed = []
        for at in range(0, len(dynamic) - step + 1, step):
            tag, value = struct.unpack_from(entry, dynamic, at)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                needed.append(strings[value : strings.find(b"\0", value)].decode())
    except (struct.error, UnicodeDecodeError):
        return None
    return ElfLinks(interpreter, tuple(needed))
