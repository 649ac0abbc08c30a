"""rpm-md repositories: repodata/repomd.xml, primary.xml and, on demand, filelists.xml.

Both XML files are read as streams (iterparse, every <package> cleared once
read), decompressed on the fly from gzip, xz, bzip2 or zstd (told apart by
their magic bytes, so odd names do not matter). The parsed primary is cached
(supermin.cache) under the identity of repomd.xml and the primary file.

filelists.xml is read only when the resolver meets a file dependency that
primary cannot answer, and then only for the paths some package of the
universe depends on (as libsolv's addfileprovides does), not for the
millions of paths a distribution ships; that answer is cached too.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

import zstandard

from supermin.backends.rpm.metadata import DEPENDENCY_KINDS, SENSE_PREREQ, Record, Triple
from supermin.backends.rpm.version import EQUAL, GREATER, LESS
from supermin.cache import cached, file_identity
from supermin.errors import SourceError

REPOMD = Path("repodata/repomd.xml")

_REPO = "{http://linux.duke.edu/metadata/repo}"
_COMMON = "{http://linux.duke.edu/metadata/common}"
_RPM = "{http://linux.duke.edu/metadata/rpm}"
_FILELISTS = "{http://linux.duke.edu/metadata/filelists}"

_PACKAGE = _COMMON + "package"
_NAME, _ARCH, _VERSION = _COMMON + "name", _COMMON + "arch", _COMMON + "version"
_LOCATION, _FORMAT, _FILE = _COMMON + "location", _COMMON + "format", _COMMON + "file"
_SOURCERPM, _ENTRY = _RPM + "sourcerpm", _RPM + "entry"
_DEPENDENCY_TAGS = {_RPM + kind: index for index, kind in enumerate(DEPENDENCY_KINDS)}
_FLAGS = {
    "EQ": EQUAL,
    "LT": LESS,
    "GT": GREATER,
    "LE": LESS | EQUAL,
    "GE": GREATER | EQUAL,
}
_FILE_GHOST = 1 << 6

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def repomd_locations(directory: Path) -> dict[str, Path]:
    """data type ("primary", "filelists", …) -> the file repomd.xml names for it."""
    repomd = directory / REPOMD
    try:
        root = ET.parse(repomd).getroot()
    except (OSError, ET.ParseError) as err:
        raise SourceError(f"cannot read {repomd}: {err}") from None
    found: dict[str, Path] = {}
    for data in root.iter(_REPO + "data"):
        location = data.find(_REPO + "location")
        kind, href = data.get("type"), location.get("href") if location is not None else None
        if kind and href:
            found[kind] = directory / href
    return found


@contextmanager
def open_metadata(path: Path) -> Iterator[IO[bytes]]:
    """`path` decompressed, as a stream."""
    try:
        raw = path.open("rb")
    except OSError as err:
        raise SourceError(f"cannot read {path}: {err.strerror}") from None
    with raw:
        head = raw.peek(8)[:8]
        kind = next((name for magic, name in _MAGIC if head.startswith(magic)), "plain")
        stream = _decompressed(raw, kind)
        with stream:
            yield stream


def _decompressed(raw: IO[bytes], kind: str) -> IO[bytes]:
    # The caller closes what this returns (then `raw`).
    if kind == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if kind == "xz":
        return lzma.LZMAFile(raw)  # noqa: SIM115
    if kind == "bzip2":
        return bz2.BZ2File(raw)  # noqa: SIM115
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


def _evr(epoch: str | None, version: str | None, release: str | None) -> str:
    if not version:
        return ""
    text = version if not epoch or epoch == "0" else f"{epoch}:{version}"
    return f"{text}-{release}" if release else text


def _package(element: ET.Element, memo: dict[Triple, Triple]) -> Record:
    name = element.findtext(_NAME) or ""
    arch = element.findtext(_ARCH) or ""
    version = element.find(_VERSION)
    if not name or version is None:
        raise ValueError("a <package> without name or version")
    epoch = version.get("epoch")
    location = element.find(_LOCATION)
    deps: list[list[Triple]] = [[] for _ in DEPENDENCY_KINDS]
    files: list[str] = []
    file_flags: list[int] = []
    source_rpm: str | None = None
    form = element.find(_FORMAT)
    for child in form if form is not None else ():
        tag = child.tag
        if tag == _FILE:
            files.append(child.text or "")
            file_flags.append(_FILE_GHOST if child.get("type") == "ghost" else 0)
        elif tag in _DEPENDENCY_TAGS:
            kind = deps[_DEPENDENCY_TAGS[tag]]
            for entry in child.iter(_ENTRY):
                attrs = entry.attrib
                flags = _FLAGS.get(attrs.get("flags", ""), 0)
                if attrs.get("pre") == "1":
                    flags |= SENSE_PREREQ
                triple = (
                    attrs["name"],
                    flags,
                    _evr(attrs.get("epoch"), attrs.get("ver"), attrs.get("rel")),
                )
                kind.append(memo.setdefault(triple, triple))
        elif tag == _SOURCERPM:
            source_rpm = child.text or ""
    return (
        name,
        int(epoch) if epoch and epoch != "0" else None,
        version.get("ver") or "",
        version.get("rel") or "",
        arch,
        None if arch in ("src", "nosrc") else source_rpm or "",
        tuple(tuple(kind) for kind in deps),
        tuple(files),
        tuple(file_flags) if any(file_flags) else (),
        location.get("href", "") if location is not None else "",
    )


def parse_primary(path: Path) -> list[Record]:
    records: list[Record] = []
    memo: dict[Triple, Triple] = {}
    with open_metadata(path) as stream:
        try:
            for _, element in ET.iterparse(stream, events=("end",)):
                if element.tag == _PACKAGE:
                    records.append(_package(element, memo))
                    element.clear()
        except (ET.ParseError, ValueError, KeyError, OSError, EOFError, zstandard.ZstdError) as err:
            raise SourceError(f"cannot parse {path}: {err}") from None
    return records


def load_primary(directory: Path) -> tuple[list[Record], RepoFileLists | None]:
    """The packages of the repository at `directory`, and its file lists if it has any."""
    locations = repomd_locations(directory)
    primary = locations.get("primary")
    if primary is None:
        raise SourceError(f"{directory / REPOMD} names no primary metadata")
    if not primary.is_file():
        raise SourceError(f"{primary} is missing", "the repository is incomplete")
    key = file_identity([directory / REPOMD, primary])
    records = cached("rpm-primary", key, lambda: parse_primary(primary))
    filelists = locations.get("filelists")
    return records, RepoFileLists(filelists) if filelists and filelists.is_file() else None


class RepoFileLists:
    """filelists.xml of one repository, searched for the paths asked about."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._answers: dict[frozenset[str], Mapping[str, tuple[str, ...]]] = {}

    def owners(self, paths: Collection[str]) -> Mapping[str, tuple[str, ...]]:
        wanted = frozenset(paths)
        for asked, answer in self._answers.items():
            if wanted <= asked:
                return answer
        digest = hashlib.sha256("\0".join(sorted(wanted)).encode("utf-8", "surrogateescape"))
        key = file_identity([self.path]) + digest.hexdigest()[:16]
        answer = cached("rpm-filelists", key, lambda: self._scan(wanted))
        self._answers[wanted] = answer
        return answer

    def _scan(self, wanted: frozenset[str]) -> dict[str, tuple[str, ...]]:
        found: dict[str, list[str]] = {}
        package_tag, file_tag = _FILELISTS + "package", _FILELISTS + "file"
        version_tag = _FILELISTS + "version"
        with open_metadata(self.path) as stream:
            try:
                for _, element in ET.iterparse(stream, events=("end",)):
                    if element.tag != package_tag:
                        continue
                    owned = [
                        text
                        for child in element.iter(file_tag)
                        if (text := child.text or "") in wanted
                    ]
                    if owned:
                        found_version = element.find(version_tag)
                        attrs = found_version.attrib if found_version is not None else {}
                        evr = _evr(attrs.get("epoch"), attrs.get("ver"), attrs.get("rel"))
                        nevra = f"{element.get('name')}-{evr}.{element.get('arch')}"
                        for path in owned:
                            found.setdefault(path, []).append(nevra)
                    element.clear()
            except (ET.ParseError, OSError, EOFError, zstandard.ZstdError) as err:
                raise SourceError(f"cannot parse {self.path}: {err}") from None
        return {path: tuple(owners) for path, owners in found.items()}
