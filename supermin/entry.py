"""The one record every source produces and every output writer consumes."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from supermin.errors import ArchiveError

ROOT = PurePosixPath("/")


class EntryKind(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"
    SOCKET = "socket"


# The stat(2) file-type bits of each kind, for writers that need a full st_mode.
KIND_FORMAT_BITS: dict[EntryKind, int] = {
    EntryKind.FILE: stat.S_IFREG,
    EntryKind.HARDLINK: stat.S_IFREG,
    EntryKind.DIR: stat.S_IFDIR,
    EntryKind.SYMLINK: stat.S_IFLNK,
    EntryKind.CHAR: stat.S_IFCHR,
    EntryKind.BLOCK: stat.S_IFBLK,
    EntryKind.FIFO: stat.S_IFIFO,
    EntryKind.SOCKET: stat.S_IFSOCK,
}


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One filesystem object of the appliance.

    `path` is absolute inside the image. `mode` holds only permission bits
    (including setuid/setgid/sticky); the type is `kind`. `target` is the link
    text of a symlink, or the absolute image path a hardlink points at.
    `content` is where the bytes of a regular file live on the build machine:
    a host file (or a spooled one) whole when `content_offset` is None, else
    the `size` bytes from that offset of a spool pack, the file one archive's
    members were streamed into (see supermin.content for reading either).
    `xattrs` are the extended attributes (full name, raw value), sorted by
    name; a hardlink carries those of its file, as they share one inode.
    """

    path: PurePosixPath
    kind: EntryKind
    mode: int
    uid: int = 0
    gid: int = 0
    user: str = "root"
    group: str = "root"
    mtime: int = 0
    size: int = 0
    target: str | None = None
    rdev: tuple[int, int] = (0, 0)
    origin: str = ""
    content: Path | None = None
    content_offset: int | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()

    @property
    def st_mode(self) -> int:
        return KIND_FORMAT_BITS[self.kind] | self.mode


def sorted_xattrs(pairs: Iterable[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """Extended attributes as FileEntry holds them: sorted by name, the last value of a name."""
    return tuple(sorted(dict(pairs).items()))


def image_path(name: str, *, origin: str = "") -> PurePosixPath:
    """Normalise an archive member name into an absolute image path.

    A `..` component is refused rather than clamped: no honest package needs
    one, and a hostile archive uses it to write outside the root.
    """
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            where = f" in {origin}" if origin else ""
            raise ArchiveError(
                f"refusing member {name!r}{where}: '..' in a path",
                "the archive is corrupt or hostile",
            )
        parts.append(part)
    return PurePosixPath("/" + "/".join(parts))


def kind_from_st_mode(st_mode: int) -> EntryKind:
    fmt = stat.S_IFMT(st_mode)
    for kind, bits in KIND_FORMAT_BITS.items():
        if bits == fmt and kind is not EntryKind.HARDLINK:
            return kind
    raise ValueError(f"unknown file type {fmt:o}")
