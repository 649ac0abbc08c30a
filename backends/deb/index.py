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

import array
import bisect
import io
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

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
    # Decompressors are imported when used: most indexes (apt's lists, every
    # cached prepare) are plain, and a prepare is mostly interpreter start-up.
    raw = path.open("rb")
    match path.suffix:
        case ".gz":
            import gzip

            return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
        case ".xz":
            import lzma

            return cast(IO[bytes], lzma.LZMAFile(raw))
        case ".bz2":
            import bz2

            return cast(IO[bytes], bz2.BZ2File(raw))
        case ".zst":
            import zstandard

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


Table = tuple[str, bytes, bytes, bytes, str, bytes, bytes]


class _Sorted:
    """Keys in sorted order, each with a number: looked up by bisection.

    A dict over Debian main's 63,440 names takes 30 ms to build; a prepare
    looks up a few hundred, so the cached table is loaded as a few strings
    and arrays and searched as it is.
    """

    def __init__(self, keys: list[str], numbers: array.array[int] | None = None) -> None:
        self.keys = keys
        self.numbers = numbers  # None: a key's number is its place

    def find(self, key: str) -> int | None:
        at = bisect.bisect_left(self.keys, key)
        if at == len(self.keys) or self.keys[at] != key:
            return None
        return at if self.numbers is None else self.numbers[at]


class IndexBlocks:
    """A Packages index split into stanza texts, unparsed (bytes: decoded when parsed).

    Each stanza is a (start, end) span of `data`. `blocks(name)`: the texts of
    the stanzas of package `name`, in file order. `providers_of(name)`: the
    names of the packages whose stanzas Provide `name`, in file order.
    """

    def __init__(
        self,
        data: bytes | mmap.mmap,
        names: list[str],
        firsts: array.array[int],
        spans: array.array[int],
        by_name: _Sorted,
        provided: _Sorted,
        provider_firsts: array.array[int],
        providers: array.array[int],
    ) -> None:
        self._data = data
        self._names = names
        self._firsts = firsts  # stanzas of names[i]: spans[2*firsts[i] : 2*firsts[i+1]]
        self._spans = spans
        self._by_name = by_name  # name -> i
        self._provided = provided  # provided name -> j
        self._provider_firsts = provider_firsts  # providers of j: names[providers[k]] for
        self._providers = providers  # k in provider_firsts[j] .. provider_firsts[j+1]
        self.count = len(spans) // 2

    def names(self) -> list[str]:
        return self._names

    def blocks(self, name: str) -> list[bytes]:
        number = self._by_name.find(name)
        if number is None:
            return []
        first, last = self._firsts[number], self._firsts[number + 1]
        spans = self._spans[2 * first : 2 * last]
        return [self._data[spans[k] : spans[k + 1]] for k in range(0, len(spans), 2)]

    def providers_of(self, name: str) -> list[str]:
        number = self._provided.find(name)
        if number is None:
            return []
        first, last = self._provider_firsts[number], self._provider_firsts[number + 1]
        return [self._names[k] for k in self._providers[first:last]]

    def table(self) -> Table:
        """Everything but the text, as strings and arrays: what the cache keeps."""
        return (
            "\n".join(self._names),
            self._firsts.tobytes(),
            self._spans.tobytes(),
            (self._by_name.numbers or array.array("Q")).tobytes(),
            "\n".join(self._provided.keys),
            self._provider_firsts.tobytes(),
            self._providers.tobytes(),
        )

    @classmethod
    def from_table(cls, data: bytes | mmap.mmap, table: Table) -> IndexBlocks:
        names, firsts, spans, order, provided, provider_firsts, providers = table
        name_list = names.split("\n") if names else []
        order_array = _array(order)
        return cls(
            data,
            name_list,
            _array(firsts),
            _array(spans),
            _Sorted([name_list[k] for k in order_array], order_array),
            _Sorted(provided.split("\n") if provided else []),
            _array(provider_firsts),
            _array(providers),
        )


def _array(raw: bytes) -> array.array[int]:
    values = array.array("Q")
    values.frombytes(raw)
    return values


def _sorted(keys: list[str]) -> _Sorted:
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return _Sorted([keys[k] for k in order], array.array("Q", order))


_PACKAGE = b"Package:"
_PROVIDES = b"\nProvides:"


def split_index(data: bytes) -> IndexBlocks:
    spans_by_name: dict[str, list[int]] = {}
    providers: dict[str, list[str]] = {}
    position = 0
    for piece in data.split(b"\n\n"):
        start = position + len(piece) - len(piece.lstrip(b"\n"))
        position += len(piece) + 2
        block = piece.strip(b"\n")
        if not block:
            continue
        if block.startswith(_PACKAGE):  # dpkg and apt always write Package: first
            end = block.find(b"\n")
            name = block[len(_PACKAGE) : end if end >= 0 else None].strip().decode()
        else:
            name = parse_stanza(block).get("Package", "")
            if not name:
                continue
        spans_by_name.setdefault(name, []).extend((start, start + len(block)))
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
    names = list(spans_by_name)
    firsts, spans = array.array("Q", [0]), array.array("Q")
    for name in names:
        spans.extend(spans_by_name[name])
        firsts.append(len(spans) // 2)
    number = {name: k for k, name in enumerate(names)}
    keys = sorted(providers)
    provider_firsts, members = array.array("Q", [0]), array.array("Q")
    for key in keys:
        members.extend(number[name] for name in providers[key])
        provider_firsts.append(len(members))
    return IndexBlocks(
        data, names, firsts, spans, _sorted(names), _Sorted(keys), provider_firsts, members
    )


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
    """The index's stanzas. An uncompressed index is mapped, not read, and its span
    table is cached by the file's identity (path, size, mtime, inode): a second
    run looks up the few hundred stanzas it needs without splitting 50 MB again."""
    if path.suffix in (".gz", ".xz", ".bz2", ".zst"):
        with open_index(path) as stream:
            return split_index(stream.read())
    with path.open("rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        data: bytes | mmap.mmap = (
            mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        )
    table = cached("deb-index-table", file_identity([path]), lambda: split_index(data[:]).table())
    return IndexBlocks.from_table(data, table)


def parse_control(blob: bytes) -> Stanza:
    return _keep(Deb822(blob.decode("utf-8", errors="replace")))


def find_indexes(directory: Path) -> Iterator[Path]:
    """One index per directory holding any: the uncompressed one, else the first compressed."""
    for name in INDEX_NAMES:
        candidate = directory / name
        if candidate.is_file():
            yield candidate
            return
