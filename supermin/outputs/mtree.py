"""An mtree(5) description of the entry stream: the true owners, modes and devices.

A chroot built without root has the builder's ownership and no device nodes;
the mtree file beside it records what the image really holds, in the dialect
libarchive's own mtree writer produces, so `bsdtar -tvf FILE.mtree` lists it.

The text is written here rather than by libarchive's writer because that
writer reorders entries (files before subdirectories), defaults nlink to 0,
cannot express which files are hardlinked together (no `inode` keyword before
libarchive 3.7), and buffers the whole tree until it is closed.

Hardlinks have no type of their own in mtree(5): every member of a set is a
`type=file` line carrying the set's metadata plus `nlink=N inode=K`, where K
numbers the sets in order of appearance. libarchive reads both keywords.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import libarchive
from libarchive import ffi

from supermin.entry import EntryKind, FileEntry
from supermin.errors import ArchiveError, OutputError

_TYPE_WORDS = {
    EntryKind.FILE: "file",
    EntryKind.HARDLINK: "file",
    EntryKind.DIR: "dir",
    EntryKind.SYMLINK: "link",
    EntryKind.CHAR: "char",
    EntryKind.BLOCK: "block",
    EntryKind.FIFO: "fifo",
    EntryKind.SOCKET: "socket",
}
# libarchive's table: printable ASCII except space, '#', '=' and '\' stays as is.
_UNSAFE = re.compile(rb"[^\x21\x22\x24-\x3c\x3e-\x5b\x5d-\x7e]")
_ESCAPED = re.compile(rb"\\([0-3][0-7]{2})")
# Every libarchive version so far answers type=socket with this warning and a
# regular file; it is the only warning read_mtree accepts.
_SOCKET_WARNING = 'Unrecognized file type "socket"'

_FILETYPE_WORDS = {
    0o010000: "fifo",
    0o020000: "char",
    0o040000: "dir",
    0o060000: "block",
    0o100000: "file",
    0o120000: "link",
    0o140000: "socket",
}

# libarchive-c does not wrap these getters.
_entry_nlink = ffi.ffi("entry_nlink", [ffi.c_archive_entry_p], ctypes.c_uint)
_entry_ino = ffi.ffi("entry_ino64", [ffi.c_archive_entry_p], ctypes.c_int64)


def write_mtree(entries: Sequence[FileEntry], path: Path) -> None:
    """Write an mtree(5) file describing every entry, in order, deterministically."""
    lines = ["#mtree\n", *_lines(entries)]
    try:
        with open(path, "w", encoding="ascii", newline="\n") as stream:
            stream.writelines(lines)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror}", "is the disk full?") from err


def quote(text: str) -> str:
    """`text` as an mtree word: unsafe bytes of its file-system encoding as \\ooo."""
    raw = os.fsencode(text)
    if not _UNSAFE.search(raw):
        return raw.decode("ascii")
    return _UNSAFE.sub(lambda m: f"\\{m[0][0]:03o}".encode("ascii"), raw).decode("ascii")


def _lines(entries: Sequence[FileEntry]) -> list[str]:
    # Paths as text: a PurePosixPath's hash is a Python method, a string's is C.
    links = Counter(
        str(PurePosixPath(e.target or "")) for e in entries if e.kind is EntryKind.HARDLINK
    )
    sets: dict[str, tuple[FileEntry, int]] = {}  # target -> (its entry, inode)
    lines: list[str] = []
    for entry in entries:
        path = str(entry.path)
        if entry.kind is EntryKind.FILE and path in links:
            sets[path] = (entry, len(sets) + 1)
        if entry.kind is EntryKind.HARDLINK:
            lines.append(_hardlink_line(entry, sets, links))
        elif path in sets:
            lines.append(_line(entry, extra=_link_words(path, sets, links)))
        else:
            lines.append(_line(entry))
    return lines


def _hardlink_line(
    entry: FileEntry,
    sets: dict[str, tuple[FileEntry, int]],
    links: Counter[str],
) -> str:
    target = str(PurePosixPath(entry.target or ""))
    if target not in sets:
        raise OutputError(
            f"cannot describe {entry.path}: its hardlink target {target} is not an earlier "
            "regular file",
            "the entry list is corrupt",
        )
    # The members share one inode, so the set's first file holds the metadata.
    source = sets[target][0]
    return _line(source, name=entry.path, extra=_link_words(target, sets, links))


def _link_words(target: str, sets: dict[str, tuple[FileEntry, int]], links: Counter[str]) -> str:
    return f" nlink={links[target] + 1} inode={sets[target][1]}"


def _line(entry: FileEntry, *, name: PurePosixPath | None = None, extra: str = "") -> str:
    relative = str(name or entry.path).lstrip("/")
    head = _head(entry.kind, entry.mode, entry.uid, entry.gid, entry.user, entry.group)
    # seconds.nanoseconds, as mtree(8) and libarchive write it.
    line = f"{quote('./' + relative) if relative else '.'} {head} time={entry.mtime}.0"
    if entry.kind in (EntryKind.FILE, EntryKind.HARDLINK):
        line += f" size={entry.size}"
    elif entry.kind is EntryKind.SYMLINK:
        line += f" link={quote(entry.target or '')}"
    elif entry.kind in (EntryKind.CHAR, EntryKind.BLOCK):
        line += f" device=native,{entry.rdev[0]},{entry.rdev[1]}"
    return line + extra + "\n"


@functools.lru_cache(maxsize=4096)
def _head(kind: EntryKind, mode: int, uid: int, gid: int, user: str, group: str) -> str:
    """The words a line's type, mode and owners make: the same on most lines of a tree."""
    words = [f"type={_TYPE_WORDS[kind]}", f"mode={mode:04o}", f"uid={uid}", f"gid={gid}"]
    if user:
        words.append(f"uname={quote(user)}")
    if group:
        words.append(f"gname={quote(group)}")
    return " ".join(words)


# ------------------------------------------------------------------ reading back


def read_mtree(path: Path) -> list[dict[str, object]]:
    """Read an mtree file with libarchive: one dict per entry, in file order.

    Keys: path (absolute), type (file, dir, link, char, block, fifo, socket),
    mode, uid, gid, uname, gname, mtime, size, link, rdev (major, minor), nlink,
    inode. libarchive only reads the file itself: its `checkfs` option, which
    would stat the described paths relative to the current directory, is off by
    default.
    """
    records: list[dict[str, object]] = []
    with libarchive.file_reader(str(path), format_name="mtree") as archive:
        archive_p = archive._pointer
        while True:
            entry = libarchive.ArchiveEntry(archive_p)
            status = ffi.read_next_header2(archive_p, entry._entry_p)
            if status == ffi.ARCHIVE_EOF:
                return records
            warning = ffi.error_string(archive_p) if status == ffi.ARCHIVE_WARN else None
            records.append(_record(entry, _decode(warning) if warning else None, path))


def _record(entry: Any, warning: str | None, source: Path) -> dict[str, object]:
    pointer = entry._entry_p
    name = _decode(ffi.entry_pathname(pointer))
    kind = _FILETYPE_WORDS.get(entry.filetype, "?")
    if warning is not None:
        if not warning.startswith(_SOCKET_WARNING):
            raise ArchiveError(f"libarchive cannot read {name} in {source}: {warning}")
        kind = "socket"
    link = ffi.entry_symlink(pointer)
    return {
        "path": _image_path(name),
        "type": kind,
        "mode": entry.perm,
        "uid": entry.uid,
        "gid": entry.gid,
        # libarchive unescapes paths and link targets, but not user and group names.
        "uname": _unescape(_decode(ffi.entry_uname(pointer))),
        "gname": _unescape(_decode(ffi.entry_gname(pointer))),
        "mtime": ffi.entry_mtime(pointer),
        "size": entry.size or 0,
        "link": _decode(link) if link is not None and kind == "link" else None,
        "rdev": (entry.rdevmajor, entry.rdevminor) if kind in ("char", "block") else (0, 0),
        "nlink": _entry_nlink(pointer),
        "inode": _entry_ino(pointer),
    }


def _image_path(name: str) -> str:
    if name == ".":
        return "/"
    return name[1:] if name.startswith("./") else "/" + name


def _decode(raw: bytes | None) -> str:
    return "" if raw is None else os.fsdecode(raw)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    raw = os.fsencode(text)
    return os.fsdecode(_ESCAPED.sub(lambda m: bytes([int(m[1], 8)]), raw))
