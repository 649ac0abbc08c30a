"""Turn the members of any tar stream libarchive can read into FileEntry records."""

from __future__ import annotations

import ctypes

import libarchive
import libarchive.ffi as ffi

from supermin.entry import ROOT, EntryKind, FileEntry, image_path, sorted_xattrs
from supermin.errors import ArchiveError
from supermin.spool import Spool

CONTENT_BLOCK = 1 << 20

_DEVICE_KINDS = (EntryKind.CHAR, EntryKind.BLOCK)

# libarchive-c has no xattr API: declare the iterator once. It yields what
# pax SCHILY.xattr.* and LIBARCHIVE.xattr.* headers (and GNU tar's) carry.
ffi.ffi("entry_xattr_reset", [ctypes.c_void_p], ctypes.c_int)
ffi.ffi(
    "entry_xattr_next",
    [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_size_t),
    ],
    ctypes.c_int,
)
_ARCHIVE_OK = 0


def member_xattrs(member: libarchive.ArchiveEntry) -> tuple[tuple[str, bytes], ...]:
    """The member's extended attributes, sorted by name."""
    pointer = member._entry_p
    pairs: list[tuple[str, bytes]] = []
    if ffi.entry_xattr_reset(pointer) <= 0:
        return ()
    name, value, size = ctypes.c_char_p(), ctypes.c_void_p(), ctypes.c_size_t()
    while ffi.entry_xattr_next(pointer, name, value, size) == _ARCHIVE_OK:
        raw = ctypes.string_at(value, size.value) if value.value else b""
        pairs.append(((name.value or b"").decode("utf-8", "surrogateescape"), raw))
    return sorted_xattrs(pairs)


def member_kind(member: libarchive.ArchiveEntry, where: str) -> EntryKind:
    if member.islnk:
        return EntryKind.HARDLINK
    checks = (
        (member.isreg, EntryKind.FILE),
        (member.isdir, EntryKind.DIR),
        (member.issym, EntryKind.SYMLINK),
        (member.ischr, EntryKind.CHAR),
        (member.isblk, EntryKind.BLOCK),
        (member.isfifo, EntryKind.FIFO),
        (member.issock, EntryKind.SOCKET),
    )
    for matches, kind in checks:
        if matches:
            return kind
    raise ArchiveError(f"{where}: member {member.pathname!r} has an unknown file type")


def tar_entries(
    archive: libarchive.ArchiveRead, spool: Spool, origin: str, where: str
) -> list[FileEntry]:
    """Every member as a FileEntry; regular file contents are streamed into `spool`."""
    entries: list[FileEntry] = []
    for member in archive:
        path = image_path(member.pathname, origin=where)
        kind = member_kind(member, where)
        content = None
        size = 0
        target: str | None = None
        if kind is EntryKind.FILE:
            content, size = spool.store(member.get_blocks(CONTENT_BLOCK))
        elif kind is EntryKind.SYMLINK:
            target = member.linkpath
        elif kind is EntryKind.HARDLINK:
            target = str(image_path(member.linkpath, origin=where))
        if path == ROOT and kind is not EntryKind.DIR:
            raise ArchiveError(f"{where}: member {member.pathname!r} would replace the root")
        entries.append(
            FileEntry(
                path=path,
                kind=kind,
                mode=member.perm & 0o7777,
                uid=member.uid,
                gid=member.gid,
                user=member.uname or str(member.uid),
                group=member.gname or str(member.gid),
                mtime=int(member.mtime or 0),
                size=size,
                target=target,
                rdev=(member.rdevmajor, member.rdevminor) if kind in _DEVICE_KINDS else (0, 0),
                origin=origin,
                content=content,
                xattrs=member_xattrs(member),
            )
        )
    return entries
