"""Where streamed archive members land until an output writer copies them."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from supermin.entry import EntryKind, FileEntry


class Spool:
    """A directory of numbered files; an archive member is written once, read later.

    Members are streamed here chunk by chunk, so no archive is ever held whole
    in memory and the merge step can order entries freely. The members of one
    archive go into one pack (see supermin.content for why); files supermin
    makes itself get a file each.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._numbers = itertools.count()

    def _name(self) -> Path:
        return self.directory / f"{next(self._numbers):08d}"  # next() is atomic under the GIL

    @contextlib.contextmanager
    def pack(self) -> Iterator[Pack]:
        """A pack for one archive's members, on one thread."""
        path = self._name()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            pack = Pack(path, fd)
            yield pack
            pack.close()
        finally:
            os.close(fd)

    def store(self, chunks: Iterable[bytes]) -> tuple[Path, int]:
        path = self._name()
        size = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
        return path, size

    def file_entry(
        self, path: PurePosixPath, data: bytes, mode: int, mtime: int, origin: str = "supermin"
    ) -> FileEntry:
        """A regular file supermin itself adds to the appliance, its bytes spooled."""
        content, size = self.store([data])
        return FileEntry(
            path, EntryKind.FILE, mode, mtime=mtime, size=size, origin=origin, content=content
        )


# Members of a block or more start on a block boundary of the pack, so that
# copy_file_range can share their blocks (a reflink) on btrfs and XFS instead
# of copying them, for the output and for the extraction cache alike: both
# file systems share only whole, aligned blocks. Smaller members are packed
# tight; copying them costs less than the padding would.
ALIGNMENT = 4096


# os.lseek lets go of the GIL around the call, and while a reader on every core
# decompresses, taking it back means waiting for another thread: two such waits
# per member (py-spy). Moving a file offset never blocks, so this one keeps it.
_LIBC = ctypes.PyDLL(None, use_errno=True)
_lseek = _LIBC.lseek
_lseek.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int]
_lseek.restype = ctypes.c_int64


def _seek(fd: int, offset: int, whence: int) -> int:
    position: int = _lseek(fd, offset, whence)
    if position < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return position


class Pack:
    """Members appended one after another to one spool file.

    Written through its descriptor, unbuffered: a member's bytes come in
    blocks of tens of kilobytes or, from a tar stream, are written by
    libarchive itself (see supermin.tarstream.store_member).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self._end = 0  # where the last member ended
        # Where the descriptor is. Kept here rather than asked of the kernel:
        # two lseeks a member were a tenth of a second of a 15,000-member build,
        # all of it holding the GIL the other readers wait for.
        self._position = 0

    def start(self, expected: int) -> int:
        """Where a member of `expected` bytes goes; the descriptor is placed there.

        Skipping to a block boundary leaves a hole, which costs nothing.
        """
        if expected >= ALIGNMENT and self._end % ALIGNMENT:
            self._end += ALIGNMENT - self._end % ALIGNMENT
        if self._position != self._end:
            self._position = _seek(self.fd, self._end, os.SEEK_SET)
        return self._end

    def finish(self, start: int, written: int | None = None) -> tuple[Path, int, int]:
        """The member written since `start`: `written` bytes, else up to where the descriptor is."""
        if written is None:
            written = _seek(self.fd, 0, os.SEEK_CUR) - start
        self._end = self._position = start + written
        return self.path, start, written

    def where_expected(self) -> bool:
        """Whether the descriptor is where the members' sizes say it should be."""
        return _seek(self.fd, 0, os.SEEK_CUR) == self._position

    def store(self, chunks: Iterable[bytes], expected: int = 0) -> tuple[Path, int, int]:
        """Append a member of `expected` bytes: (pack path, offset, size)."""
        start = self.start(expected)
        written = 0
        for chunk in chunks:
            view = memoryview(chunk)
            written += len(view)
            while view:
                view = view[os.write(self.fd, view) :]
        return self.finish(start, written)

    def close(self) -> None:
        """A member ending in a hole was skipped over, not written: give the file its end."""
        if os.fstat(self.fd).st_size < self._end:
            os.ftruncate(self.fd, self._end)

    def file_entry(
        self, path: PurePosixPath, data: bytes, mode: int, mtime: int, origin: str = "supermin"
    ) -> FileEntry:
        """Spool.file_entry's regular file, its bytes appended to this pack.

        For the many small files supermin writes at once (a dpkg database has
        four or five per package), where a spool file each would cost a create.
        """
        pack, offset, size = self.store([data], len(data))
        return FileEntry(
            path,
            EntryKind.FILE,
            mode,
            mtime=mtime,
            size=size,
            origin=origin,
            content=pack,
            content_offset=offset,
        )
