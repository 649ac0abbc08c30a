"""Where streamed archive members land until an output writer copies them."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from supermin.entry import EntryKind, FileEntry


class Spool:
    """A directory of numbered blobs; an archive member is written once, read later.

    Members are streamed here chunk by chunk, so no archive is ever held whole
    in memory and the merge step can order entries freely.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._numbers = itertools.count()

    def store(self, chunks: Iterable[bytes]) -> tuple[Path, int]:
        path = self.directory / f"{next(self._numbers):08d}"
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
