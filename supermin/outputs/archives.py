"""cpio (newc) and tar (pax) writers on libarchive, fed by the same entry stream.

Hardlinks: tar records them as links to the first name; newc gives every name
of a set the same inode number and link count and carries the data on the
last name, as cpio and the kernel's initramfs unpacker expect. Inode numbers
are assigned in entry order, so the same entries give the same bytes.

Extended attributes: tar carries them as pax SCHILY.xattr.* records, which
GNU tar --xattrs and bsdtar restore, on a file's member only (its hardlinks
share the inode). newc has no place for them: the cpio writer leaves them
out and `dropped_xattrs` names what it leaves out.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import libarchive
import libarchive.exception
import libarchive.ffi as ffi

from supermin.content import Content
from supermin.entry import EntryKind, FileEntry
from supermin.errors import OutputError
from supermin.outputs.compression import Compression, new_compressor

_BLOCK = 1 << 20

# libarchive-c does not wrap these setters; declare them once.
ffi.ffi("entry_set_ino64", [ctypes.c_void_p, ctypes.c_int64], None)
ffi.ffi("entry_set_nlink", [ctypes.c_void_p, ctypes.c_uint], None)
ffi.ffi("entry_update_symlink_utf8", [ctypes.c_void_p, ctypes.c_char_p], ctypes.c_int)
ffi.ffi("entry_update_hardlink_utf8", [ctypes.c_void_p, ctypes.c_char_p], ctypes.c_int)
ffi.ffi(
    "entry_xattr_add_entry",
    [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t],
    None,
)


@dataclass(frozen=True)
class _Member:
    entry: FileEntry
    name: str
    size: int
    content: Content | None
    ino: int
    nlink: int
    hardlink_to: str | None = None
    with_xattrs: bool = False


def _link_groups(entries: Sequence[FileEntry]) -> dict[PurePosixPath, list[FileEntry]]:
    groups: dict[PurePosixPath, list[FileEntry]] = {}
    for entry in entries:
        if entry.kind is EntryKind.HARDLINK:
            groups.setdefault(PurePosixPath(entry.target or ""), []).append(entry)
    return groups


def _name(path: PurePosixPath, prefix: str) -> str:
    relative = str(path).lstrip("/")
    return prefix + relative if relative else "."


def _cpio_members(entries: Sequence[FileEntry]) -> Iterator[_Member]:
    groups = _link_groups(entries)
    by_path = {e.path: e for e in entries}
    inodes: dict[PurePosixPath, int] = {}
    last_of_group = {links[-1].path: target for target, links in groups.items()}
    for number, entry in enumerate(entries, start=1):
        name = _name(entry.path, "")
        if entry.kind is EntryKind.HARDLINK:
            target = PurePosixPath(entry.target or "")
            source = by_path[target]
            links = len(groups[target]) + 1
            carries_data = entry.path in last_of_group
            yield _Member(
                source,
                name,
                source.size if carries_data else 0,
                Content.of(source) if carries_data else None,
                inodes[target],
                links,
            )
        elif entry.path in groups:
            inodes[entry.path] = number
            yield _Member(entry, name, 0, None, number, len(groups[entry.path]) + 1)
        else:
            nlink = 2 if entry.kind is EntryKind.DIR else 1
            yield _Member(entry, name, entry.size, Content.of(entry), number, nlink)


def _tar_members(entries: Sequence[FileEntry]) -> Iterator[_Member]:
    for number, entry in enumerate(entries, start=1):
        name = _name(entry.path, "./")
        if entry.kind is EntryKind.HARDLINK:
            target = _name(PurePosixPath(entry.target or ""), "./")
            yield _Member(entry, name, 0, None, number, 1, hardlink_to=target)
        else:
            yield _Member(entry, name, entry.size, Content.of(entry), number, 1, with_xattrs=True)


def _archive_entry(member: _Member) -> libarchive.ArchiveEntry:
    entry = member.entry
    kind = EntryKind.FILE if entry.kind is EntryKind.HARDLINK else entry.kind
    archive_entry = libarchive.ArchiveEntry(
        pathname=member.name,
        filetype=entry.st_mode & 0o170000 if kind is not EntryKind.FILE else 0o100000,
        perm=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        uname=entry.user,
        gname=entry.group,
        mtime=entry.mtime,
        size=member.size,
    )
    pointer = archive_entry._entry_p
    ffi.entry_set_ino64(pointer, member.ino)
    ffi.entry_set_nlink(pointer, member.nlink)
    if entry.kind in (EntryKind.CHAR, EntryKind.BLOCK):
        archive_entry.rdevmajor, archive_entry.rdevminor = entry.rdev
    if entry.kind is EntryKind.SYMLINK:
        ffi.entry_update_symlink_utf8(pointer, (entry.target or "").encode())
    if member.hardlink_to is not None:
        ffi.entry_update_hardlink_utf8(pointer, member.hardlink_to.encode())
    if member.with_xattrs:
        for name, value in entry.xattrs:
            ffi.entry_xattr_add_entry(pointer, name.encode(), value, len(value))
    return archive_entry


def _write_member(archive: libarchive.write.ArchiveWrite, member: _Member) -> None:
    pointer = archive._pointer
    header = _archive_entry(member)  # keep it referenced: its C struct dies with it
    ffi.write_header(pointer, header._entry_p)
    if member.content is not None and member.size:
        written = 0
        try:
            for block in member.content.chunks(_BLOCK):
                ffi.write_data(pointer, block, len(block))
                written += len(block)
        except OSError as err:
            raise OutputError(
                f"{member.entry.path}: cannot read {member.content}: {err.strerror}",
                "its content file is unreadable or was removed while supermin ran",
            ) from err
        if written != member.size:
            raise OutputError(
                f"{member.entry.path}: expected {member.size} bytes from {member.content}, "
                f"found {written}"
            )
    ffi.write_finish_entry(pointer)


def _write(members: Iterator[_Member], path: Path, format_name: str, kind: Compression) -> None:
    compressor = new_compressor(kind)
    member: _Member | None = None
    with path.open("xb") as out:

        def sink(data: bytes) -> int:
            out.write(compressor.compress(bytes(data)))
            return len(data)

        try:
            with libarchive.custom_writer(sink, format_name, block_size=_BLOCK) as archive:
                for member in members:
                    _write_member(archive, member)
        except libarchive.exception.ArchiveError as err:
            where = f"{member.entry.path}: " if member is not None else ""
            raise OutputError(
                f"cannot write {where}{err.msg} ({format_name})",
                "this output format cannot represent the entry",
            ) from None
        out.write(compressor.flush())


def dropped_xattrs(entries: Sequence[FileEntry]) -> list[str]:
    """Paths whose extended attributes write_cpio leaves out (newc cannot hold them).

    A hardlink is named once, by its file: the attributes belong to the inode.
    """
    return [str(e.path) for e in entries if e.xattrs and e.kind is not EntryKind.HARDLINK]


def write_cpio(entries: Sequence[FileEntry], path: Path, compression: Compression) -> None:
    """One newc cpio of the whole tree (an initramfs), compressed as asked.

    Extended attributes are left out: warn about `dropped_xattrs(entries)`.
    """
    _write(_cpio_members(entries), path, "cpio_newc", compression)


def write_tar(entries: Sequence[FileEntry], path: Path, compression: Compression) -> None:
    """A pax tarball with numeric owners and names, as OS-template users expect."""
    _write(_tar_members(entries), path, "pax_restricted", compression)
