"""The bytes of a regular file on the build machine, wherever they were put.

A host file is read whole. An archive member lives in a spool pack: every
member of one archive is appended to one file, because creating a file costs
more than writing tens of kilobytes into one (0.16 ms of system time each on
ext4 here, ~13,000 members in the libguestfs appliance), so a member is the
`size` bytes at an offset of its pack.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from supermin.entry import FileEntry

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Content:
    """All of the file at `path`, or (with an offset) the `length` bytes from there."""

    path: Path
    offset: int | None = None
    length: int = 0

    @classmethod
    def of(cls, entry: FileEntry) -> Content | None:
        if entry.content is None:
            return None
        return cls(entry.content, entry.content_offset, entry.size)

    @property
    def start(self) -> int:
        return self.offset or 0

    def __str__(self) -> str:
        return str(self.path) if self.offset is None else f"{self.path} at {self.offset}"

    def open(self) -> tuple[int, int]:
        """A descriptor placed at the first byte, and how many of our bytes the file holds.

        For a whole file that is its size now, which the caller compares with
        what it recorded (the file may have changed since); for a span, fewer
        than `length` only when the pack was cut short. OSError when unreadable.
        """
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            actual = os.fstat(fd).st_size
            if self.offset is None:
                return fd, actual
            os.lseek(fd, self.offset, os.SEEK_SET)
            return fd, max(0, min(self.length, actual - self.offset))
        except BaseException:
            os.close(fd)
            raise

    def chunks(self, block: int = _CHUNK) -> Iterator[bytes]:
        """The bytes in blocks: a whole file as it is now, a span ending early when cut short."""
        fd, actual = self.open()
        try:
            left = actual
            while left > 0:
                data = os.read(fd, min(block, left))
                if not data:
                    return
                left -= len(data)
                yield data
        finally:
            os.close(fd)

    def read(self) -> bytes:
        return b"".join(self.chunks())


def read_content(entry: FileEntry) -> bytes:
    """A regular file's bytes (b"" when it has none)."""
    content = Content.of(entry)
    return content.read() if content is not None else b""
