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
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from supermin.content import Content
from supermin.elf import elf_links
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


class FileView:
    """A tree to look files up in, symlinks followed: appliance entries or a host root."""

    def __init__(
        self, entries: Sequence[FileEntry] | None = None, host_root: Path | None = None
    ) -> None:
        self._entries: Mapping[PurePosixPath, FileEntry] = {e.path: e for e in entries or ()}
        self._host_root = host_root

    def _node(self, path: PurePosixPath) -> tuple[EntryKind, str | None, Content | None] | None:
        if self._host_root is None:
            entry = self._entries.get(path)
            if entry is None:
                return None
            return entry.kind, entry.target, Content.of(entry)
        host = self._host_root / str(path).lstrip("/")
        try:
            if host.is_symlink():
                return EntryKind.SYMLINK, os.readlink(host), None
            if host.is_dir():
                return EntryKind.DIR, None, None
            if host.is_file() and os.access(host, os.R_OK):
                return EntryKind.FILE, None, Content(host)
        except OSError:
            return None
        return None

    def resolve(self, path: PurePosixPath) -> tuple[PurePosixPath, Content] | None:
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


def runtime_files(program: bytes, view: FileView) -> list[tuple[PurePosixPath, Content]] | None:
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
        library = elf_links(content.read())
        if library is not None:
            queue.extend(library.needed)
    return files
