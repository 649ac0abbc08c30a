"""The one record every source produces and every output writer consumes."""

from __future__ import annotations

import dataclasses
import operator
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PosixPath, PurePath, PurePosixPath
from typing import Any, TypeVar

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

    def __reduce__(self) -> tuple[type[FileEntry], tuple[Any, ...]]:
        # A frozen, slotted dataclass otherwise pickles through a __getstate__
        # that calls fields() for every entry: a third of the time storing the
        # archives in the extraction cache took (py-spy, 226 packages).
        return FileEntry, _field_values(self)


_field_values = operator.attrgetter(*(field.name for field in dataclasses.fields(FileEntry)))


def sorted_xattrs(pairs: Iterable[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """Extended attributes as FileEntry holds them: sorted by name, the last value of a name."""
    return tuple(sorted(dict(pairs).items()))


_P = TypeVar("_P", bound=PurePath)
# Python 3.11's pathlib parses every path it is given (3 µs), more than the
# lstat of a host file costs; a path whose components are already known can
# skip that through the constructor pathlib itself uses for them. Later
# versions parse lazily and changed that constructor: they take the plain way.
_PARSED_PARTS = sys.version_info[:2] == (3, 11)


def clean_path(cls: type[_P], components: list[str]) -> _P:
    """`cls("/" + "/".join(components))` for non-empty components without "/", "." or "..".

    Callers guarantee that (every component comes from splitting a path and
    dropping empty and "." ones, or from a directory listing); the result
    then equals, hashes and prints as the parsed path would.
    """
    if _PARSED_PARTS:
        concrete: Any = PosixPath if cls is Path else cls  # Path() itself picks PosixPath
        made: _P = concrete._from_parsed_parts("", "/", ["/", *components])
        return made
    return cls("/" + "/".join(components))


def image_path(name: str, *, origin: str = "") -> PurePosixPath:
    """Normalise an archive member name into an absolute image path.

    A `..` component is refused rather than clamped: no honest package needs
    one, and a hostile archive uses it to write outside the root.
    """
    return clean_path(PurePosixPath, image_components(name, origin=origin))


def image_components(name: str, *, origin: str = "") -> list[str]:
    """The components of `image_path(name)` below the root ([] for the root itself)."""
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
    return parts


_KIND_OF_FORMAT = {
    bits: kind for kind, bits in KIND_FORMAT_BITS.items() if kind is not EntryKind.HARDLINK
}


def kind_from_st_mode(st_mode: int) -> EntryKind:
    fmt = stat.S_IFMT(st_mode)
    kind = _KIND_OF_FORMAT.get(fmt)
    if kind is None:
        raise ValueError(f"unknown file type {fmt:o}")
    return kind
