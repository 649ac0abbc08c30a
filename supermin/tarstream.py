"""Turn the members of any tar stream libarchive can read into FileEntry records."""

from __future__ import annotations

import libarchive

from supermin.entry import ROOT, EntryKind, FileEntry, image_path
from supermin.errors import ArchiveError
from supermin.spool import Spool

CONTENT_BLOCK = 1 << 20

_DEVICE_KINDS = (EntryKind.CHAR, EntryKind.BLOCK)


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
            )
        )
    return entries
