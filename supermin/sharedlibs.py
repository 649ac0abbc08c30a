"""What a dynamically linked program needs to run: its ELF interpreter and libraries.

The ext2 format's initrd prefers a static busybox, but a stock Debian host has
the dynamic one (`busybox`, recommended by initramfs-tools). Such a program
runs in the initrd when its program interpreter sits at the path PT_INTERP
names and each DT_NEEDED library at a path the loader searches without an
ld.so.cache. Files are looked up with symlinks followed (merged-/usr, the
`/lib64 -> usr/lib64` links) either among the appliance's entries or on the
host; each library is placed in the initrd under the search directory it was
found through, so the loader's default path finds it there too.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from supermin.entry import ROOT, EntryKind, FileEntry

_TRIPLETS = (
    "x86_64-linux-gnu",
    "aarch64-linux-gnu",
    "i386-linux-gnu",
    "arm-linux-gnueabihf",
    "powerpc64le-linux-gnu",
    "s390x-linux-gnu",
    "riscv64-linux-gnu",
)
# The loader's default directories: Debian's multiarch ones first, then Fedora's.
SEARCH_DIRS = tuple(
    PurePosixPath(d)
    for d in (
        *(f"{prefix}/lib/{t}" for t in _TRIPLETS for prefix in ("", "/usr")),
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    )
)
_MAX_HOPS = 40
_PT_INTERP = 3
_DT_NEEDED = 1


@dataclass(frozen=True)
class ElfLinks:
    interpreter: str | None  # PT_INTERP; None: a static program
    needed: tuple[str, ...]  # DT_NEEDED sonames


def elf_links(data: bytes) -> ElfLinks | None:
    """The interpreter and needed libraries of an ELF file; None if it is not ELF."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    order = "<" if data[5] == 1 else ">"
    wide = data[4] == 2

    def unpack(fmt: str, offset: int) -> tuple[int, ...]:
        return struct.unpack_from(order + fmt, data, offset)

    try:
        phoff, shoff = unpack("QQ", 0x20) if wide else unpack("II", 0x1C)
        phentsize, phnum = unpack("HH", 0x36 if wide else 0x2A)
        shentsize, shnum, shstrndx = unpack("HHH", 0x3A if wide else 0x2E)
        interpreter = None
        for index in range(phnum):
            at = phoff + index * phentsize
            kind, offset, size = (
                (unpack("I", at)[0], unpack("Q", at + 8)[0], unpack("Q", at + 32)[0])
                if wide
                else (unpack("I", at)[0], unpack("I", at + 4)[0], unpack("I", at + 16)[0])
            )
            if kind == _PT_INTERP:
                interpreter = data[offset : offset + size].rstrip(b"\0").decode()
        sections = {}
        header = "IIQQQQ" if wide else "IIIIII"  # name, type, flags, addr, offset, size
        table = [unpack(header, shoff + i * shentsize) for i in range(shnum)]
        if table:
            names_at, names_size = table[shstrndx][4], table[shstrndx][5]
            names = data[names_at : names_at + names_size]
            for name_at, _, _, _, offset, size in table:
                name = names[name_at : names.find(b"\0", name_at)].decode(errors="replace")
                sections[name] = data[offset : offset + size]
        dynamic, strings = sections.get(".dynamic", b""), sections.get(".dynstr", b"")
        needed = []
        step = 16 if wide else 8
        for at in range(0, len(dynamic) - step + 1, step):
            tag, value = struct.unpack_from(order + ("qQ" if wide else "iI"), dynamic, at)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                needed.append(strings[value : strings.find(b"\0", value)].decode())
    except (struct.error, IndexError, UnicodeDecodeError):
        return None
    return ElfLinks(interpreter, tuple(needed))


class FileView:
    """A tree to look files up in, symlinks followed: appliance entries or a host root."""

    def __init__(
        self, entries: Sequence[FileEntry] | None = None, host_root: Path | None = None
    ) -> None:
        self._entries: Mapping[PurePosixPath, FileEntry] = {e.path: e for e in entries or ()}
        self._host_root = host_root

    def _node(self, path: PurePosixPath) -> tuple[EntryKind, str | None, Path | None] | None:
        if self._host_root is None:
            entry = self._entries.get(path)
            if entry is None:
                return None
            return entry.kind, entry.target, entry.content
        host = self._host_root / str(path).lstrip("/")
        try:
            if host.is_symlink():
                return EntryKind.SYMLINK, os.readlink(host), None
            if host.is_dir():
                return EntryKind.DIR, None, None
            if host.is_file() and os.access(host, os.R_OK):
                return EntryKind.FILE, None, host
        except OSError:
            return None
        return None

    def resolve(self, path: PurePosixPath) -> tuple[PurePosixPath, Path] | None:
        """The real path of a regular file and where to read it, every symlink followed."""
        pending = list(path.parts[1:])
        current = ROOT
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":  # physical: `current` has had its symlinks resolved
                current = current.parent
                continue
            candidate = current / part
            node = self._node(candidate)
            if node is None:
                return None
            kind, target, content = node
            if kind is EntryKind.SYMLINK and target is not None:
                hops += 1
                if hops > _MAX_HOPS:
                    return None
                base = ROOT if target.startswith("/") else current
                pending = [*PurePosixPath(base, target).parts[1:], *pending]
                current = ROOT
                continue
            if not pending:
                return (candidate, content) if kind is EntryKind.FILE and content else None
            current = candidate
        return None


def runtime_files(program: bytes, view: FileView) -> list[tuple[PurePosixPath, Path]] | None:
    """(path in the initrd, file to copy) for the interpreter and every library needed.

    [] for a static program; None when something needed is missing from `view`.
    """
    links = elf_links(program)
    if links is None:
        return None
    if links.interpreter is None:
        return []
    found = view.resolve(PurePosixPath(links.interpreter))
    if found is None:
        return None
    files = [(PurePosixPath(links.interpreter), found[1])]
    queue = list(links.needed)
    seen: set[str] = set()
    while queue:
        soname = queue.pop(0)
        if soname in seen:
            continue
        seen.add(soname)
        hit = next(((d / soname, r) for d in SEARCH_DIRS if (r := view.resolve(d / soname))), None)
        if hit is None:
            return None
        placed, (_, content) = hit
        files.append((placed, content))
        library = elf_links(content.read_bytes())
        if library is not None:
            queue.extend(library.needed)
    return files
