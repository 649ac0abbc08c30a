"""Read a .rpm into file entries: metadata from the header, contents from the payload.

rpm installs what the header arrays say (type, mode, owner names, mtime, link
target, device numbers, hardlink sets, %ghost, %config); the cpio payload only
carries the bytes of regular files. So does this reader: the payload is
decompressed as a stream and each regular file goes straight to the spool,
checked against the header digest on the way, and no payload is held whole.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import stat
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar, cast

import zstandard

from supermin.backends.rpm.filecaps import CAPABILITY_XATTR, capability_xattr
from supermin.backends.rpm.header import (
    Header,
    NotAnRpm,
    PackageFormatError,
    RpmHeader,
    Scriptlet,
    Tag,
    Trigger,
    file_paths,
    package_header,
    read_headers,
    scriptlets,
    triggers,
)
from supermin.entry import ROOT, EntryKind, FileEntry, image_path, kind_from_st_mode
from supermin.errors import ArchiveError
from supermin.packages import PackageContents, Script
from supermin.spool import Pack, Spool

__all__ = ["RpmContents", "RpmHeader", "read_rpm", "read_rpm_header"]

_REDOWNLOAD = "download the package again or remove it from the source"
_CHUNK = 1 << 20

FILE_CONFIG = 1 << 0  # rpmfileAttrs
FILE_GHOST = 1 << 6

# Owner names that Fedora and openSUSE both fix to these numbers. Other names get
# 0 here, as rpm itself uses root for a name it cannot resolve; the names stay on
# every entry and are resolved through the appliance's own /etc/passwd and
# /etc/group later (DESIGN.md §4).
STATIC_UIDS = {"root": 0, "bin": 1, "daemon": 2, "lp": 4, "mail": 8}
STATIC_GIDS = {
    "root": 0,
    "bin": 1,
    "daemon": 2,
    "sys": 3,
    "tty": 5,
    "disk": 6,
    "lp": 7,
    "kmem": 9,
    "wheel": 10,
    "mail": 12,
}

# What a first install runs, in this order for every package of the transaction:
# all %pretrans, then per package %pre and %post, then all %posttrans. %pre and
# %post share a stage: rpm runs one package's %post before the next one's %pre.
_FIRST_INSTALL_STAGES = {"pretrans": 0, "pre": 1, "post": 1, "posttrans": 2}


@dataclass(frozen=True, slots=True)
class RpmContents:
    """An opened .rpm: its entries, and everything rpm knows that PackageContents does not."""

    header: RpmHeader
    entries: tuple[FileEntry, ...]
    scriptlets: tuple[Scriptlet, ...] = ()  # every scriptlet in the header, erase ones too
    triggers: tuple[Trigger, ...] = ()
    conffiles: tuple[str, ...] = ()  # %config paths among the entries
    ghosts: tuple[str, ...] = ()  # %ghost paths left out of the entries (all but directories)
    capabilities: dict[str, str] = field(default_factory=dict)  # path -> "cap_net_raw=ep"
    payload_compressor: str = ""  # zstd, xz, lzma, gzip, bzip2 or none, as found in the data

    @property
    def scripts(self) -> tuple[Script, ...]:
        """The scriptlets of a first install, called as rpm calls them there.

        rpm passes "1" (the package's instance count after the install) to a
        scriptlet with a body. One given only as a program (`%post -p
        /sbin/ldconfig`) becomes an empty body: rpm runs that program alone,
        with no arguments.
        """
        return tuple(
            Script(
                phase=s.kind,
                stage=_FIRST_INSTALL_STAGES[s.kind],
                body=s.body or b"",
                arguments=("1",) if s.body is not None else (),
                interpreter=s.interpreter,
            )
            for s in self.scriptlets
            if s.kind in _FIRST_INSTALL_STAGES
        )

    def package_contents(self) -> PackageContents:
        return PackageContents(entries=self.entries, scripts=self.scripts, conffiles=self.conffiles)


# ---------------------------------------------------------------- the header's file table

_T = TypeVar("_T")
_DIGESTS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}


@dataclass(frozen=True, slots=True)
class _Files:
    """The per-file header arrays, all as long as `paths`."""

    paths: list[str]
    modes: tuple[int, ...]
    sizes: tuple[int, ...]
    mtimes: tuple[int, ...]
    flags: tuple[int, ...]
    rdevs: tuple[int, ...]
    users: list[str]
    groups: list[str]
    links: list[str]
    digests: list[str]
    caps: list[str]
    digest_algo: str | None
    # File index -> its hardlink set, in header order (the order of rpm's payload).
    hardlinks: dict[int, tuple[int, ...]]

    def is_ghost(self, fx: int) -> bool:
        return bool(self.flags[fx] & FILE_GHOST)

    def leader(self, fx: int) -> int:
        """The member of fx's hardlink set that becomes the regular file: the first path."""
        links = self.hardlinks.get(fx)
        return min(links, key=self.paths.__getitem__) if links else fx


def _file_table(header: Header, paths: list[str]) -> _Files:
    count = len(paths)

    def checked(tag: Tag, values: Sequence[_T], default: _T) -> list[_T]:
        if tag not in header:
            return [default] * count
        if len(values) != count:
            raise PackageFormatError(f"{tag.name} has {len(values)} entries for {count} files")
        return list(values)

    modes = checked(Tag.FILEMODES, header.integers(Tag.FILEMODES), 0)
    flags = checked(Tag.FILEFLAGS, header.integers(Tag.FILEFLAGS), 0)
    inodes = checked(Tag.FILEINODES, header.integers(Tag.FILEINODES), 0)
    devices = checked(Tag.FILEDEVICES, header.integers(Tag.FILEDEVICES), 0)
    # rpm's hardlink sets: regular, non-ghost files sharing (device, inode).
    sets: dict[tuple[int, int], list[int]] = {}
    for fx in range(count):
        if stat.S_ISREG(modes[fx]) and not flags[fx] & FILE_GHOST and inodes[fx] > 0:
            sets.setdefault((devices[fx], inodes[fx]), []).append(fx)
    size_tag = Tag.LONGFILESIZES if Tag.LONGFILESIZES in header else Tag.FILESIZES
    algo = header.integer(Tag.FILEDIGESTALGO)
    return _Files(
        paths=paths,
        modes=tuple(modes),
        sizes=tuple(checked(size_tag, header.integers(size_tag), 0)),
        mtimes=tuple(checked(Tag.FILEMTIMES, header.integers(Tag.FILEMTIMES), 0)),
        flags=tuple(flags),
        rdevs=tuple(checked(Tag.FILERDEVS, header.integers(Tag.FILERDEVS), 0)),
        users=checked(Tag.FILEUSERNAME, header.strings(Tag.FILEUSERNAME), "root"),
        groups=checked(Tag.FILEGROUPNAME, header.strings(Tag.FILEGROUPNAME), "root"),
        links=checked(Tag.FILELINKTOS, header.paths(Tag.FILELINKTOS), ""),
        digests=checked(Tag.FILEDIGESTS, header.strings(Tag.FILEDIGESTS), ""),
        caps=checked(Tag.FILECAPS, header.strings(Tag.FILECAPS), ""),
        digest_algo=_DIGESTS.get(1 if algo is None else algo),  # rpm < 4.6: md5
        hardlinks={fx: tuple(group) for group in sets.values() if len(group) > 1 for fx in group},
    )


# ---------------------------------------------------------------- payload

_PAYLOAD_MAGICS = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"0707", "none"),
)
# What the decompressors raise on damaged or truncated data.
_DECOMPRESS_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error, zstandard.ZstdError)


def _sniff(raw: io.BufferedReader, tag: str | None) -> str:
    """The payload compression, from the data's magic rather than PAYLOADCOMPRESSOR.

    Old packages lack the tag and rpm's own test packages carry raw cpio without
    one. Only the legacy .lzma format has no real magic; there the tag is believed.
    """
    start = raw.tell()
    head = raw.read(6)
    raw.seek(start)
    kind = next((kind for magic, kind in _PAYLOAD_MAGICS if head.startswith(magic)), None)
    if kind is None and (tag == "lzma" or head[:1] == b"\x5d"):
        kind = "lzma"
    if kind is None:
        raise PackageFormatError(f"unknown payload compression {tag!r} (data: {head.hex()})")
    return kind


def _decompressed(raw: io.BufferedReader, kind: str) -> IO[bytes]:
    match kind:
        case "zstd":
            # rpm allows long-distance windows (w19L); accept what libzstd can.
            reader = zstandard.ZstdDecompressor(max_window_size=1 << 31).stream_reader(
                raw, read_size=_CHUNK, read_across_frames=True, closefd=False
            )
            return cast(IO[bytes], reader)
        case "xz":
            return cast(IO[bytes], lzma.LZMAFile(raw, format=lzma.FORMAT_XZ))
        case "lzma":
            return cast(IO[bytes], lzma.LZMAFile(raw, format=lzma.FORMAT_ALONE))
        case "gzip":
            return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
        case "bzip2":
            return cast(IO[bytes], bz2.BZ2File(raw))
    return raw


def _normal(name: str) -> str:
    """`str(image_path(name))` without building a path object (headers of 14,000 files)."""
    return "/" + "/".join(part for part in name.split("/") if part not in ("", "."))


_NEWC = struct.Struct("8s" * 13)  # the SVR4 header after its 6-byte magic
_TRAILER = b"TRAILER!!!"
_NAME_MAX = 64 * 1024  # PATH_MAX is 4096; anything far beyond it is damage
_STRIPPED_END = 0xFFFFFFFF


class _Cpio:
    """rpm's cpio dialects, read forward only.

    "070701" (and "070702", whose checksum rpm ignores) are SVR4 members named by
    path. "07070X" is rpm's stripped form for packages with files of 4 GiB or
    more (rpm >= 4.12): a member is only a header file index, its data size is
    the header's, and hardlinks carry data on their last member only.
    """

    def __init__(self, stream: IO[bytes], files: _Files) -> None:
        self._stream = stream
        self._files = files
        self._offset = 0
        self._left = 0
        self._by_path = {_normal(p): fx for fx, p in enumerate(files.paths)}

    def _read(self, size: int) -> bytes:
        parts = []
        while size:
            try:
                chunk = self._stream.read(min(size, _CHUNK))
            except _DECOMPRESS_ERRORS as err:
                raise PackageFormatError(f"payload: {err}") from None
            if not chunk:
                raise PackageFormatError("payload ends early")
            parts.append(chunk)
            size -= len(chunk)
            self._offset += len(chunk)
        return b"".join(parts)

    def _align(self) -> None:
        self._read(-self._offset % 4)

    def chunks(self) -> Iterator[bytes]:
        """The data of the current member, in blocks."""
        while self._left:
            chunk = self._read(min(self._left, _CHUNK))
            self._left -= len(chunk)
            yield chunk

    def members(self) -> Iterator[tuple[int, int]]:
        """(header file index, data size) of every member; unread data is skipped."""
        while True:
            for _ in self.chunks():
                pass
            self._align()
            magic = self._read(6)
            if magic == b"07070X":
                fx = self._number(self._read(8))
                self._align()
                if fx == _STRIPPED_END:
                    return
                if fx >= len(self._files.paths):
                    raise PackageFormatError(f"payload member {fx} is not in the header")
                self._left = self._stripped_size(fx)
            elif magic in (b"070701", b"070702"):
                fields = _NEWC.unpack(self._read(_NEWC.size))
                size, name_size = self._number(fields[6]), self._number(fields[11])
                if not 0 < name_size <= _NAME_MAX:
                    raise PackageFormatError(f"cpio name of {name_size} bytes")
                name = self._read(name_size).rstrip(b"\0")
                self._align()
                if name == _TRAILER:
                    return
                self._left = size
                fx = self._index(name)
            else:
                raise PackageFormatError(f"payload is not an rpm cpio archive (magic {magic!r})")
            yield fx, self._left

    def _index(self, name: bytes) -> int:
        text = name.decode("utf-8", "surrogateescape")
        try:
            return self._by_path[_normal(text)]
        except KeyError:
            raise PackageFormatError(f"payload member {text!r} is not in the header") from None

    def _stripped_size(self, fx: int) -> int:
        mode, links = self._files.modes[fx], self._files.hardlinks.get(fx)
        if stat.S_ISLNK(mode) or (stat.S_ISREG(mode) and (not links or links[-1] == fx)):
            return self._files.sizes[fx]
        return 0

    @staticmethod
    def _number(text: bytes) -> int:
        try:
            return int(text, 16)
        except ValueError:
            raise PackageFormatError(f"bad number {text!r} in a cpio header") from None


def _verified(chunks: Iterator[bytes], files: _Files, fx: int) -> Iterator[bytes]:
    """Pass `chunks` through; fail at the end unless they match the header's digest."""
    expected = files.digests[fx].lower()
    if not expected or files.digest_algo is None:
        yield from chunks
        return
    digest = hashlib.new(files.digest_algo, usedforsecurity=False)
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
    if digest.hexdigest() != expected:
        raise PackageFormatError(f"{files.paths[fx]} does not match its {files.digest_algo} digest")


def _spool_payload(cpio: _Cpio, files: _Files, pack: Pack) -> dict[int, tuple[Path, int, int]]:
    """Store each regular file's data; a hardlink set's is stored once, under its leader."""
    stored: dict[int, tuple[Path, int, int]] = {}
    seen: set[int] = set()
    for fx, size in cpio.members():
        if fx in seen:
            raise PackageFormatError(f"{files.paths[fx]} appears twice in the payload")
        seen.add(fx)
        if files.is_ghost(fx) or not stat.S_ISREG(files.modes[fx]):
            continue  # symlink targets, like all metadata, come from the header
        leader = files.leader(fx)
        if fx in files.hardlinks and (size == 0 or leader in stored):
            continue  # SVR4 payloads carry a set's data once, on its last member
        if size != files.sizes[fx]:
            raise PackageFormatError(
                f"{files.paths[fx]} has {size} bytes in the payload"
                f" but {files.sizes[fx]} in the header"
            )
        stored[leader] = pack.store(_verified(cpio.chunks(), files, fx), size)
    for fx, path in enumerate(files.paths):
        if fx not in seen and not files.is_ghost(fx):
            raise PackageFormatError(f"the payload lacks {path}")
        if fx in files.hardlinks and files.leader(fx) == fx and fx not in stored:
            if files.sizes[fx]:
                raise PackageFormatError(f"the payload lacks the data of {path}")
            stored[fx] = pack.store(_verified(iter(()), files, fx))  # an empty hardlinked file
    return stored


# ---------------------------------------------------------------- entries


def _entries(
    files: _Files, stored: dict[int, tuple[Path, int, int]], origin: str, where: str
) -> tuple[list[FileEntry], list[str]]:
    entries: list[FileEntry] = []
    ghosts: list[str] = []
    for fx, name in enumerate(files.paths):
        if files.is_ghost(fx) and not stat.S_ISDIR(files.modes[fx]):
            ghosts.append(_normal(name))  # rpm records %ghost files but never creates them
            continue
        try:
            kind = kind_from_st_mode(files.modes[fx])
        except ValueError:
            raise PackageFormatError(f"{name} has an unknown file type") from None
        path = image_path(name, origin=where)
        if path == ROOT and kind is not EntryKind.DIR:
            raise PackageFormatError(f"{name!r} would replace the root")
        meta = files.leader(fx)  # a hardlink set is one inode: one set of metadata
        content, offset, size, target = None, None, 0, None
        if kind is EntryKind.FILE and meta != fx:
            kind, target = EntryKind.HARDLINK, _normal(files.paths[meta])
        elif kind is EntryKind.FILE:
            content, offset, size = stored[fx]
        elif kind is EntryKind.SYMLINK:
            target = files.links[fx]
        device = kind in (EntryKind.CHAR, EntryKind.BLOCK)
        user, group = files.users[meta], files.groups[meta]
        # libcap's cap_set_fd, through which rpm sets them, takes regular files only.
        regular = kind in (EntryKind.FILE, EntryKind.HARDLINK)
        capable = regular and files.caps[meta]
        xattrs = ((CAPABILITY_XATTR, _capability(files, meta)),) if capable else ()
        entries.append(
            FileEntry(
                path=path,
                kind=kind,
                mode=stat.S_IMODE(files.modes[meta]),
                uid=STATIC_UIDS.get(user, 0),
                gid=STATIC_GIDS.get(group, 0),
                user=user,
                group=group,
                mtime=files.mtimes[meta],
                size=size,
                target=target,
                rdev=(os.major(files.rdevs[fx]), os.minor(files.rdevs[fx])) if device else (0, 0),
                origin=origin,
                content=content,
                content_offset=offset,
                xattrs=xattrs,
            )
        )
    return entries, ghosts


def _capability(files: _Files, fx: int) -> bytes:
    try:
        return capability_xattr(files.caps[fx])
    except ValueError as err:
        raise PackageFormatError(f"{files.paths[fx]}: {err}") from None


# ---------------------------------------------------------------- entry points


def read_rpm_header(path: Path) -> RpmHeader:
    """The metadata of `path` for indexing (header only: the payload is not read)."""
    with _open(path) as raw:
        try:
            header = read_headers(raw)
            return package_header(header, file_paths(header))
        except PackageFormatError as err:
            raise _archive_error(path, err) from None


def read_rpm(path: Path, spool: Spool, origin: str) -> RpmContents:
    """Open `path` into entries (regular file contents spooled), scriptlets and metadata."""
    with _open(path) as raw:
        try:
            header = read_headers(raw)
            paths = file_paths(header)
            files = _file_table(header, paths)
            payload_format = header.string(Tag.PAYLOADFORMAT)
            if payload_format not in (None, "cpio"):
                raise PackageFormatError(f"unsupported payload format {payload_format!r}")
            compressor = _sniff(raw, header.string(Tag.PAYLOADCOMPRESSOR))
            cpio = _Cpio(_decompressed(raw, compressor), files)
            with spool.pack() as pack:
                stored = _spool_payload(cpio, files, pack)
            entries, ghosts = _entries(files, stored, origin, str(path))
            emitted = {str(entry.path) for entry in entries}
            config = [_normal(p) for fx, p in enumerate(paths) if files.flags[fx] & FILE_CONFIG]
            return RpmContents(
                header=package_header(header, paths),
                entries=tuple(entries),
                scriptlets=scriptlets(header),
                triggers=triggers(header),
                conffiles=tuple(p for p in config if p in emitted),
                ghosts=tuple(ghosts),
                capabilities={
                    _normal(p): cap for p, cap in zip(paths, files.caps, strict=True) if cap
                },
                payload_compressor=compressor,
            )
        except PackageFormatError as err:
            raise _archive_error(path, err) from None


def _archive_error(path: Path, err: PackageFormatError) -> ArchiveError:
    if isinstance(err, NotAnRpm):
        return ArchiveError(f"{path}: not an RPM package ({err})", _REDOWNLOAD)
    return ArchiveError(f"{path}: corrupt or truncated RPM ({err})", _REDOWNLOAD)


def _open(path: Path) -> io.BufferedReader:
    try:
        return open(path, "rb")  # noqa: SIM115 (closed by the caller)
    except OSError as err:
        raise ArchiveError(f"cannot read {path}: {err.strerror}") from None
