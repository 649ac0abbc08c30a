"""Parse Debian package indexes (Packages, dpkg status, a .deb's control) into stanzas.

python-debian's deb822 parser reads control files and the dpkg status; only
the fields the resolver and the build use are kept. A repository's Packages
index (Debian 12 main: 63,440 stanzas, 50 MB) is another matter: deb822 takes
14 s over it, and a resolution looks at a few hundred stanzas. So an index is
only split into per-package text blocks (found by name, and by what they
Provide), and a block is parsed the first time the resolver asks for its
package — about 0.2 s for the whole file, every time, with no cache to trust.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import zstandard
from debian.deb822 import Deb822, Packages

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


@dataclass(frozen=True)
class IndexBlocks:
    """A Packages index split into stanza texts, unparsed (bytes: decoded when parsed).

    `by_name`: package name -> its stanzas' texts, in file order. `providers`:
    a name some stanza Provides -> the names of the packages whose stanzas do.
    """

    by_name: dict[str, list[bytes]]
    providers: dict[str, list[str]]
    count: int


_PACKAGE = b"Package:"
_PROVIDES = b"\nProvides:"


def split_index(data: bytes) -> IndexBlocks:
    by_name: dict[str, list[bytes]] = {}
    providers: dict[str, list[str]] = {}
    count = 0
    for block in data.split(b"\n\n"):
        block = block.strip(b"\n")
        if block.startswith(_PACKAGE):  # dpkg and apt always write Package: first
            end = block.find(b"\n")
            name = block[len(_PACKAGE) : end if end >= 0 else None].strip().decode()
        else:
            name = parse_stanza(block).get("Package", "")
            if not name:
                continue
        count += 1
        by_name.setdefault(name, []).append(block)
        at = block.find(_PROVIDES)
        if at >= 0:
            end = block.find(b"\n", at + 1)
            line = block[at + len(_PROVIDES) : end if end >= 0 else None].decode()
            if end >= 0 and block[end + 1 : end + 2] in (b" ", b"\t"):  # folded: rare
                line = parse_stanza(block).get("Provides", "").replace("\n", " ")
            for item in line.split(","):
                provided = item.split("(", 1)[0].strip().split(":", 1)[0]
                if provided:
                    providers.setdefault(provided, []).append(name)
    return IndexBlocks(by_name, providers, count)


_KEPT = frozenset(KEPT_FIELDS)


def parse_stanza(block: bytes) -> Stanza:
    """The kept fields of one stanza's text (continuation lines joined with newlines)."""
    stanza: Stanza = {}
    current: str | None = None
    for line in block.decode("utf-8", errors="replace").split("\n"):
        if line[:1] in (" ", "\t"):
            if current is not None:
                stanza[current] += "\n" + line
            continue
        name, colon, value = line.partition(":")
        current = name if colon and name in _KEPT else None
        if current is not None:
            stanza[current] = value.strip()
    return stanza


def read_index_blocks(path: Path) -> IndexBlocks:
    with open_index(path) as stream:
        return split_index(stream.read())


def parse_control(blob: bytes) -> Stanza:
    return _keep(Deb822(blob.decode("utf-8", errors="replace")))


def find_indexes(directory: Path) -> Iterator[Path]:
    """One index per directory holding any: the uncompressed one, else the first compressed."""
    for name in INDEX_NAMES:
        candidate = directory / name
        if candidate.is_file():
            yield candidate
            return
