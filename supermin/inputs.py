"""Read supermin.d input directories the way supermin 5 does: every file sniffed by content.

- a tar archive (plain, gzip, xz, bzip2 or zstd compressed): its members, as they are;
- text whose lines start with `/`: hostfiles (one glob per line);
- text whose lines start with `-`: excludefiles (one pattern per line);
- any other text: package names, one per line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import libarchive
import libarchive.exception

from supermin.entry import FileEntry
from supermin.errors import ArchiveError, InputError
from supermin.spool import Spool
from supermin.tarstream import tar_entries

_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"BZh")


@dataclass
class Appliance:
    """What the input directories ask for."""

    packages: list[str] = field(default_factory=list)
    hostfiles: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    tarballs: list[Path] = field(default_factory=list)


def _is_tar_like(head: bytes) -> bool:
    return head.startswith(_COMPRESSED_MAGIC) or head[257:262] == b"ustar"


def _text_lines(path: Path, head: bytes) -> list[str]:
    if b"\0" in head:
        raise InputError(
            f"{path}: not a tarball, package list, hostfiles or excludefiles",
            "remove it from the input directory",
        )
    text = path.read_text(errors="surrogateescape")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _classify(path: Path, appliance: Appliance) -> None:
    with path.open("rb") as stream:
        head = stream.read(512)
    if not head:
        return
    if _is_tar_like(head):
        appliance.tarballs.append(path)
        return
    lines = _text_lines(path, head)
    if not lines:
        return
    if lines[0].startswith("/"):
        appliance.hostfiles.extend(lines)
    elif lines[0].startswith("-"):
        appliance.excludes.extend(line[1:] for line in lines)
    else:
        appliance.packages.extend(line for line in lines if not line.startswith("#"))


def read_inputs(directories: Sequence[Path]) -> Appliance:
    appliance = Appliance()
    for directory in directories:
        if not directory.is_dir():
            raise InputError(
                f"input {directory} is not a directory", "run supermin --prepare first"
            )
        try:
            files = sorted(p for p in directory.iterdir() if p.is_file())
            for path in files:
                _classify(path, appliance)
        except OSError as err:
            raise InputError(
                f"cannot read input {err.filename or directory}: {err.strerror}"
            ) from None
    appliance.packages = sorted(set(appliance.packages))
    return appliance


def tarball_entries(path: Path, spool: Spool) -> list[FileEntry]:
    try:
        with libarchive.file_reader(str(path), format_name="tar") as archive:
            return tar_entries(archive, spool, origin=path.name, where=str(path))
    except libarchive.exception.ArchiveError as err:
        raise ArchiveError(f"{path}: corrupt or truncated tarball ({err.msg})") from None
