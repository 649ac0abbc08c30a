"""Expand supermin `hostfiles` lines (shell globs of absolute paths) on the host."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import PurePosixPath

from supermin.entry import FileEntry
from supermin.hostfiles.hostfs import HostFiles


def hostfile_entries(patterns: Iterable[str], host: HostFiles) -> list[FileEntry]:
    """One entry per matching path (directories are not copied recursively, as in supermin 5)."""
    root = str(host.sysroot).rstrip("/")
    entries: list[FileEntry] = []
    for pattern in patterns:
        for match in sorted(glob.glob(root + pattern)):
            image = PurePosixPath("/" + match[len(root) :].lstrip("/"))
            entry = host.entry(image, origin="hostfiles")
            if entry is not None:
                entries.append(entry)
    return entries
