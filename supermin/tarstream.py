"""Turn the members of any tar stream libarchive can read into FileEntry records."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import libarchive
import libarchive.ffi as ffi

from supermin.entry import (
    EntryKind,
    FileEntry,
    clean_path,
    image_components,
    image_path,
    kind_from_st_mode,
    sorted_xattrs,
)
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


def member_xattrs(pointer: int) -> tuple[tuple[str, bytes], ...]:
    """The extended attributes of the member whose header is at `pointer`, sorted by name."""
    pairs: list[tuple[str, bytes]] = []
    if ffi.entry_xattr_reset(pointer) <= 0:
        return ()
    name, value, size = ctypes.c_char_p(), ctypes.c_void_p(), ctypes.c_size_t()
    while ffi.entry_xattr_next(pointer, name, value, size) == _ARCHIVE_OK:
        raw = ctypes.string_at(value, size.value) if value.value else b""
        pairs.append(((name.value or b"").decode("utf-8", "surrogateescape"), raw))
    return sorted_xattrs(pairs)


# Declared here: libarchive-c does not wrap it. The whole member is
# decompressed and written by libarchive, without the GIL.
ffi.ffi("read_data_into_fd", [ffi.c_archive_p, ctypes.c_int], ctypes.c_int, ffi.check_int)


# What a header says is read through accessors that only return a field of
# libarchive's entry. Through libarchive-c (ctypes.CDLL) each call lets go of
# the GIL and takes it back: some twenty per member, and with a reader on every
# core a tenth of the readers' time went to waiting for the GIL (py-spy).
# Called through ctypes.PyDLL they keep it, as such short C functions may.
_HELD = ctypes.PyDLL(ffi.libarchive_path)


def _accessor(name: str, restype: type[ctypes._SimpleCData[Any]]) -> Callable[[int], Any]:
    function = getattr(_HELD, f"archive_entry_{name}")
    function.argtypes = [ctypes.c_void_p]
    function.restype = restype
    return function  # type: ignore[no-any-return]


_pathname = _accessor("pathname", ctypes.c_char_p)
_hardlink = _accessor("hardlink", ctypes.c_char_p)
_symlink = _accessor("symlink", ctypes.c_char_p)
_filetype = _accessor("filetype", ctypes.c_uint)
_perm = _accessor("perm", ctypes.c_uint)
_uid = _accessor("uid", ctypes.c_int64)
_gid = _accessor("gid", ctypes.c_int64)
_uname = _accessor("uname", ctypes.c_char_p)
_gname = _accessor("gname", ctypes.c_char_p)
_mtime_is_set = _accessor("mtime_is_set", ctypes.c_int)
_mtime = _accessor("mtime", ctypes.c_int64)
_size_is_set = _accessor("size_is_set", ctypes.c_int)
_size = _accessor("size", ctypes.c_int64)
_rdevmajor = _accessor("rdevmajor", ctypes.c_uint)
_rdevminor = _accessor("rdevminor", ctypes.c_uint)
_xattr_count = _accessor("xattr_count", ctypes.c_int)
_sparse_count = _accessor("sparse_count", ctypes.c_int)


_next_header = ffi.read_next_header  # decompresses: lets go of the GIL, as it should


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


def store_member(
    archive: libarchive.ArchiveRead, archive_entry: int, pack: Pack, expected: int
) -> tuple[Path, int, int]:
    """Append the current member's bytes to `pack`: (pack path, offset, size).

    libarchive writes them straight to the pack's descriptor (holes of a
    sparse member are skipped over, and read back as zeros), with no block
    passing through Python: on a reader per core, those passages were the
    readers' main wait for the GIL.
    """
    if _sparse_count(archive_entry):
        # libarchive skips a hole with lseek(SEEK_CUR) and then checks the
        # result against the member's own offset, which only holds at the start
        # of a file: a sparse member's blocks go through member_data instead.
        return pack.store(member_data(archive, expected), expected)
    start = pack.start(expected)
    ffi.read_data_into_fd(archive._pointer, pack.fd)
    # libarchive writes exactly the header's size or fails (a truncated
    # member is an error), so the pack need not ask where the descriptor is
    # now; tar_entries checks that once per archive.
    return pack.finish(start, expected if _size_is_set(archive_entry) else None)


def _kind(filetype: int, name: str, where: str) -> EntryKind:
    try:
        return kind_from_st_mode(filetype)
    except ValueError:
        raise ArchiveError(f"{where}: member {name!r} has an unknown file type") from None


def _text(raw: bytes) -> str:
    """A name from a header: its bytes as the file system would take them back."""
    return os.fsdecode(raw)


def tar_entries(
    archive: libarchive.ArchiveRead, spool: Spool, origin: str, where: str
) -> list[FileEntry]:
    """Every member as a FileEntry; regular file contents are streamed into a pack of `spool`."""
    with spool.pack() as pack:
        entries = _entries(archive, pack, origin, where)
        if not pack.where_expected():
            raise ArchiveError(
                f"{where}: libarchive wrote a member of another size than its header gave",
                "the archive is damaged: recreate it or download it again",
            )
        return entries


def _entries(
    archive: libarchive.ArchiveRead, pack: Pack, origin: str, where: str
) -> list[FileEntry]:
    entries: list[FileEntry] = []
    pointer = archive._pointer
    found = ctypes.c_void_p()
    # archive_read_next_header fills libarchive's own entry: iterating
    # libarchive-c's ArchiveRead allocates and frees one per member instead,
    # two more calls that let go of the GIL and wait to take it back.
    while _next_header(pointer, ctypes.byref(found)) != ffi.ARCHIVE_EOF:
        header = found.value
        if not header:  # never, on ARCHIVE_OK; the accessors below would crash on it
            raise ArchiveError(f"{where}: libarchive gave a member without a header")
        name = _text(_pathname(header) or b"")
        hardlink = _hardlink(header)
        kind = EntryKind.HARDLINK if hardlink else _kind(_filetype(header), name, where)
        components = image_components(name, origin=where)
        # Checked on the components: comparing the path with ROOT is a Python method call.
        if not components and kind is not EntryKind.DIR:
            raise ArchiveError(f"{where}: member {name!r} would replace the root")
        path = clean_path(PurePosixPath, components)
        content = offset = None
        size = 0
        target: str | None = None
        if kind is EntryKind.FILE:
            expected = (_size(header) if _size_is_set(header) else 0) or 0
            content, offset, size = store_member(archive, header, pack, expected)
        elif kind is EntryKind.SYMLINK:
            target = _text(_symlink(header) or b"")
        elif kind is EntryKind.HARDLINK:
            target = str(image_path(_text(hardlink), origin=where))
        uid, gid = _uid(header), _gid(header)
        entries.append(
            FileEntry(
                path=path,
                kind=kind,
                mode=_perm(header) & 0o7777,
                uid=uid,
                gid=gid,
                user=_text(_uname(header) or b"") or str(uid),
                group=_text(_gname(header) or b"") or str(gid),
                mtime=_mtime(header) if _mtime_is_set(header) else 0,
                size=size,
                target=target,
                rdev=(_rdevmajor(header), _rdevminor(header)) if kind in _DEVICE_KINDS else (0, 0),
                origin=origin,
                content=content,
                content_offset=offset,
                xattrs=member_xattrs(header) if _xattr_count(header) else (),
            )
        )
    return entries
