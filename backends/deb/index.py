"""Parse Debian package indexes (Packages, dpkg status, a .deb's control) into stanzas.

python-debian's deb822 parser reads the files; only the fields the resolver
and the build use are kept, and the result is cached by file identity so a
second run does not re-parse a 60,000-package index.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

import zstandard
from debian.deb822 import Deb822, Packages

from supermin.cache import cached, file_identity

Stanza = dict[str, str]

KEPT_FIELDS = (
    "Package",
    "Version",
    "Architecture",
    "Depends",
    "Pre-Depends",
    "Provides",
    "Conflicts",
    "Breaks",
    "Multi-Arch",
    "Priority",
    "Essential",
    "Filename",
    "Status",
    "Conffiles",
)

INDEX_NAMES = ("Packages", "Packages.xz", "Packages.gz", "Packages.zst", "Packages.bz2")


def open_index(path: Path) -> IO[bytes]:
    """Open a possibly compressed index as a byte stream (decompressed on the fly)."""
    raw = path.open("rb")
    match path.suffix:
        case ".gz":
            return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
        case ".xz":
            return cast(IO[bytes], lzma.LZMAFile(raw))
        case ".bz2":
            return cast(IO[bytes], bz2.BZ2File(raw))
        case ".zst":
            reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
            return cast(IO[bytes], io.BufferedReader(reader))
    return raw


def _keep(paragraph: Deb822) -> Stanza:
    return {name: paragraph[name] for name in KEPT_FIELDS if name in paragraph}


def parse_index(path: Path) -> list[Stanza]:
    with open_index(path) as stream:
        return [
            _keep(paragraph)
            for paragraph in Packages.iter_paragraphs(stream, use_apt_pkg=False)
            if "Package" in paragraph
        ]


def load_index(path: Path) -> list[Stanza]:
    return cached("deb-index", file_identity([path]), lambda: parse_index(path))


def parse_control(blob: bytes) -> Stanza:
    return _keep(Deb822(blob.decode("utf-8", errors="replace")))


def find_indexes(directory: Path) -> Iterator[Path]:
    """One index per directory holding any: the uncompressed one, else the first compressed."""
    for name in INDEX_NAMES:
        candidate = directory / name
        if candidate.is_file():
            yield candidate
            return
