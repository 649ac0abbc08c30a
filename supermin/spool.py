"""Where streamed archive members land until an output writer copies them."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

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
        with os.fdopen(fd, "wb") as out:
            yield Pack(path, out)

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


class Pack:
    """Members appended one after another to one spool file."""

    def __init__(self, path: Path, out: BinaryIO) -> None:
        self.path = path
        self._out = out
        self._end = 0

    def store(self, chunks: Iterable[bytes], expected: int = 0) -> tuple[Path, int, int]:
        """Append a member of `expected` bytes: (pack path, offset, size)."""
        if expected >= ALIGNMENT and self._end % ALIGNMENT:
            padding = ALIGNMENT - self._end % ALIGNMENT
            self._out.write(bytes(padding))
            self._end += padding
        start = self._end
        for chunk in chunks:
            self._out.write(chunk)
            self._end += len(chunk)
        return self.path, start, self._end - start
