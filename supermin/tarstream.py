"""Turn the members of any tar stream libarchive can read into FileEntry records."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import libarchive
import libarchive.ffi as ffi

from supermin.entry import ROOT, EntryKind, FileEntry, image_path, sorted_xattrs
from supermin.errors import ArchiveError
from supermin.spool import Pack, Spool

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


def member_data(archive: libarchive.ArchiveRead, size: int) -> Iterator[bytes]:
    """The current member's bytes, block by block as libarchive decompressed them.

    libarchive-c's get_blocks allocates and zeroes its whole buffer for every
    member and copies it twice per block (1 MiB for a 30-byte file): over the
    ~13,000 members of an appliance that was 8% of a build's CPU time. Here
    each block is copied once, out of libarchive's own buffer. Holes of a
    sparse member come as zeros.
    """
    pointer = archive._pointer
    block, length, offset = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_longlong()
    position = 0
    while True:
        status = ffi.read_data_block(
            pointer, ctypes.byref(block), ctypes.byref(length), ctypes.byref(offset)
        )
        if status == ffi.ARCHIVE_EOF:
            break
        if offset.value > position:
            yield from _zeros(offset.value - position)
            position = offset.value
        if length.value:
            yield ctypes.string_at(block, length.value)
            position += length.value
    if size > position:  # a hole at the end
        yield from _zeros(size - position)


def _zeros(count: int) -> Iterator[bytes]:
    while count > 0:
        step = min(count, CONTENT_BLOCK)
        yield bytes(step)
        count -= step


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
    """Every member as a FileEntry; regular file contents are streamed into a pack of `spool`."""
    with spool.pack() as pack:
        return _entries(archive, pack, origin, where)


def _entries(
    archive: libarchive.ArchiveRead, pack: Pack, origin: str, where: str
) -> list[FileEntry]:
    entries: list[FileEntry] = []
    for member in archive:
        path = image_path(member.pathname, origin=where)
        kind = member_kind(member, where)
        content = offset = None
        size = 0
        target: str | None = None
        if kind is EntryKind.FILE:
            content, offset, size = pack.store(
                member_data(archive, member.size or 0), member.size or 0
            )
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
                content_offset=offset,
                xattrs=member_xattrs(member),
            )
        )
    return entries
