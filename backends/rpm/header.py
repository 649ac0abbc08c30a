"""The .rpm lead, signature and main header, and the metadata read from them.

rpmfile supplies the tag catalogue. Its header reader is not used: it cannot
decode 64-bit integers (LONGFILESIZES), merges the signature and main headers
into one name-keyed dict and reports damage through assertions; the structure
is small, so it is parsed here, within rpm's own sanity limits (lib/header.c).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import IO

from rpmfile.headers import tags as _CATALOGUE

from supermin.backends.rpm.version import EQUAL, GREATER, LESS, SENSE_MASK


class Tag(IntEnum):
    """The header tags read here, numbered by rpmfile's tag catalogue (rpmtag.h)."""

    NAME = _CATALOGUE["name"]
    VERSION = _CATALOGUE["version"]
    RELEASE = _CATALOGUE["release"]
    EPOCH = _CATALOGUE["serial"]
    ARCH = _CATALOGUE["arch"]
    PREIN = _CATALOGUE["prein"]
    POSTIN = _CATALOGUE["postin"]
    PREUN = _CATALOGUE["preun"]
    POSTUN = _CATALOGUE["postun"]
    OLDFILENAMES = _CATALOGUE["oldfilenames"]
    FILESIZES = _CATALOGUE["filesizes"]
    FILEMODES = _CATALOGUE["filemodes"]
    FILERDEVS = _CATALOGUE["filerdevs"]
    FILEMTIMES = _CATALOGUE["filemtimes"]
    FILEDIGESTS = _CATALOGUE["filemd5s"]
    FILELINKTOS = _CATALOGUE["filelinktos"]
    FILEFLAGS = _CATALOGUE["fileflags"]
    FILEUSERNAME = _CATALOGUE["fileusername"]
    FILEGROUPNAME = _CATALOGUE["filegroupname"]
    SOURCERPM = _CATALOGUE["sourcerpm"]
    PROVIDENAME = _CATALOGUE["provides"]
    REQUIREFLAGS = _CATALOGUE["requireflags"]
    REQUIRENAME = _CATALOGUE["requirename"]
    REQUIREVERSION = _CATALOGUE["requireversion"]
    CONFLICTFLAGS = _CATALOGUE["conflictflags"]
    CONFLICTNAME = _CATALOGUE["conflictname"]
    CONFLICTVERSION = _CATALOGUE["conflictversion"]
    TRIGGERSCRIPTS = _CATALOGUE["triggerscripts"]
    TRIGGERNAME = _CATALOGUE["triggername"]
    TRIGGERVERSION = _CATALOGUE["triggerversion"]
    TRIGGERFLAGS = _CATALOGUE["triggerflags"]
    TRIGGERINDEX = _CATALOGUE["triggerindex"]
    VERIFYSCRIPT = _CATALOGUE["verifyscript"]
    PREINPROG = _CATALOGUE["preinprog"]
    POSTINPROG = _CATALOGUE["postinprog"]
    PREUNPROG = _CATALOGUE["preunprog"]
    POSTUNPROG = _CATALOGUE["postunprog"]
    OBSOLETENAME = _CATALOGUE["obsoletes"]
    VERIFYSCRIPTPROG = _CATALOGUE["verifyscriptprog"]
    TRIGGERSCRIPTPROG = _CATALOGUE["triggerscriptprog"]
    FILEDEVICES = _CATALOGUE["filedevices"]
    FILEINODES = _CATALOGUE["fileinodes"]
    PROVIDEFLAGS = _CATALOGUE["provideflags"]
    PROVIDEVERSION = _CATALOGUE["provideversion"]
    OBSOLETEFLAGS = _CATALOGUE["obsoleteflags"]
    OBSOLETEVERSION = _CATALOGUE["obsoleteversion"]
    DIRINDEXES = _CATALOGUE["dirindexes"]
    BASENAMES = _CATALOGUE["basenames"]
    DIRNAMES = _CATALOGUE["dirnames"]
    PAYLOADFORMAT = 1124
    PAYLOADCOMPRESSOR = 1125
    PRETRANS = _CATALOGUE["pretrans"]
    POSTTRANS = _CATALOGUE["posttrans"]
    PRETRANSPROG = _CATALOGUE["pretransprog"]
    POSTTRANSPROG = _CATALOGUE["posttransprog"]
    OLDSUGGESTSNAME = _CATALOGUE["oldsuggestsname"]
    OLDSUGGESTSVERSION = _CATALOGUE["oldsuggestsversion"]
    OLDSUGGESTSFLAGS = _CATALOGUE["oldsuggestsflags"]
    OLDENHANCESNAME = _CATALOGUE["oldenhancesname"]
    OLDENHANCESVERSION = _CATALOGUE["oldenhancesversion"]
    OLDENHANCESFLAGS = _CATALOGUE["oldenhancesflags"]
    LONGFILESIZES = _CATALOGUE["longfilesizes"]
    FILECAPS = _CATALOGUE["filecaps"]
    FILEDIGESTALGO = _CATALOGUE["filedigestalgo"]
    PREINFLAGS = _CATALOGUE["preinflags"]
    POSTINFLAGS = _CATALOGUE["postinflags"]
    PREUNFLAGS = _CATALOGUE["preunflags"]
    POSTUNFLAGS = _CATALOGUE["postunflags"]
    PRETRANSFLAGS = _CATALOGUE["pretransflags"]
    POSTTRANSFLAGS = _CATALOGUE["posttransflags"]
    VERIFYSCRIPTFLAGS = _CATALOGUE["verifyscriptflags"]
    TRIGGERSCRIPTFLAGS = _CATALOGUE["triggerscriptflags"]
    RECOMMENDNAME = _CATALOGUE["recommendname"]
    RECOMMENDVERSION = _CATALOGUE["recommendversion"]
    RECOMMENDFLAGS = _CATALOGUE["recommendflags"]
    SUGGESTNAME = _CATALOGUE["suggestname"]
    SUGGESTVERSION = _CATALOGUE["suggestversion"]
    SUGGESTFLAGS = _CATALOGUE["suggestflags"]
    SUPPLEMENTNAME = _CATALOGUE["supplementname"]
    SUPPLEMENTVERSION = _CATALOGUE["supplementversion"]
    SUPPLEMENTFLAGS = _CATALOGUE["supplementflags"]
    ENHANCENAME = _CATALOGUE["enhancename"]
    ENHANCEVERSION = _CATALOGUE["enhanceversion"]
    ENHANCEFLAGS = _CATALOGUE["enhanceflags"]
    FILETRIGGERSCRIPTS = _CATALOGUE["filetriggerscripts"]
    FILETRIGGERSCRIPTPROG = _CATALOGUE["filetriggerscriptprog"]
    FILETRIGGERSCRIPTFLAGS = _CATALOGUE["filetriggerscriptflags"]
    FILETRIGGERNAME = _CATALOGUE["filetriggername"]
    FILETRIGGERINDEX = _CATALOGUE["filetriggerindex"]
    FILETRIGGERVERSION = _CATALOGUE["filetriggerversion"]
    FILETRIGGERFLAGS = _CATALOGUE["filetriggerflags"]
    TRANSFILETRIGGERSCRIPTS = _CATALOGUE["transfiletriggerscripts"]
    TRANSFILETRIGGERSCRIPTPROG = _CATALOGUE["transfiletriggerscriptprog"]
    TRANSFILETRIGGERSCRIPTFLAGS = _CATALOGUE["transfiletriggerscriptflags"]
    TRANSFILETRIGGERNAME = _CATALOGUE["transfiletriggername"]
    TRANSFILETRIGGERINDEX = _CATALOGUE["transfiletriggerindex"]
    TRANSFILETRIGGERVERSION = _CATALOGUE["transfiletriggerversion"]
    TRANSFILETRIGGERFLAGS = _CATALOGUE["transfiletriggerflags"]
    FILETRIGGERPRIORITIES = _CATALOGUE["filetriggerpriorities"]
    TRANSFILETRIGGERPRIORITIES = _CATALOGUE["transfiletriggerpriorities"]
    PREUNTRANS = _CATALOGUE["preuntrans"]
    POSTUNTRANS = _CATALOGUE["postuntrans"]
    PREUNTRANSPROG = _CATALOGUE["preuntransprog"]
    POSTUNTRANSPROG = _CATALOGUE["postuntransprog"]
    PREUNTRANSFLAGS = _CATALOGUE["preuntransflags"]
    POSTUNTRANSFLAGS = _CATALOGUE["postuntransflags"]


# rpmsenseFlags bits of trigger conditions, and of SUSE's pre-4.12 weak dependencies.
SENSE_TRIGGERIN = 1 << 16
SENSE_TRIGGERUN = 1 << 17
SENSE_TRIGGERPOSTUN = 1 << 18
SENSE_TRIGGERPREIN = 1 << 25
SENSE_STRONG = 1 << 27  # an old Suggests that is a Recommends, an old Enhances a Supplements


class PackageFormatError(Exception):
    """A damaged header or payload; the reader turns it into an ArchiveError naming the file."""


class NotAnRpm(PackageFormatError):
    """The file does not start with an rpm lead."""


# ---------------------------------------------------------------- header structures

_LEAD = struct.Struct(">4sBBhh66shh16s")
_LEAD_MAGIC = b"\xed\xab\xee\xdb"
_SIGNATURE_IN_HEADER = 5  # RPMSIGTYPE_HEADERSIG: the only signature kind rpm >= 4 reads
_INTRO = struct.Struct(">3sB4xII")
_HEADER_MAGIC = b"\x8e\xad\xe8"
_INDEX = struct.Struct(">iIiI")
_SIGTAG_SIZE, _SIGTAG_LONGSIZE = 1000, 270
_MAX_TAGS = 0xFFFF  # rpm's HEADER_TAGS_MAX
_MAX_DATA = 0x0FFFFFFF  # rpm's HEADER_DATA_MAX (256 MiB)
_INT_FORMATS = {1: "B", 2: "B", 3: "H", 4: "I", 5: "Q"}  # char, int8/16/32/64
_STRING_TYPES = (6, 8, 9)  # string, string array, i18n string
_I18N_STRING = 9


class Header:
    """One header structure: tag -> (type, offset, count) over its data store."""

    def __init__(self, index: dict[int, tuple[int, int, int]], store: bytes) -> None:
        self._index = index
        self._store = store

    def __contains__(self, tag: int) -> bool:
        return tag in self._index

    def integers(self, tag: int) -> tuple[int, ...]:
        if tag not in self._index:
            return ()
        kind, offset, count = self._index[tag]
        code = _INT_FORMATS.get(kind)
        if code is None:
            raise PackageFormatError(f"tag {tag} is not an integer")
        try:
            return struct.unpack_from(f">{count}{code}", self._store, offset)
        except struct.error:
            raise PackageFormatError(f"tag {tag} runs past the header data") from None

    def integer(self, tag: int) -> int | None:
        values = self.integers(tag)
        return values[0] if values else None

    def raw_strings(self, tag: int) -> list[bytes]:
        if tag not in self._index:
            return []
        kind, offset, count = self._index[tag]
        if kind not in _STRING_TYPES:
            raise PackageFormatError(f"tag {tag} is not a string")
        if kind == _I18N_STRING:
            count = 1  # the first translation is the untranslated one
        strings = []
        for _ in range(count):
            end = self._store.find(b"\0", offset)
            if end < 0:
                raise PackageFormatError(f"tag {tag} runs past the header data")
            strings.append(self._store[offset:end])
            offset = end + 1
        return strings

    def strings(self, tag: int) -> list[str]:
        return [raw.decode("utf-8", "replace") for raw in self.raw_strings(tag)]

    def string(self, tag: int) -> str | None:
        values = self.strings(tag)
        return values[0] if values else None

    def blob(self, tag: int) -> bytes | None:
        """A string tag as undecoded bytes (script bodies), None if absent."""
        values = self.raw_strings(tag)
        return values[0] if values else None

    def paths(self, tag: int) -> list[str]:
        """File names and link targets: bytes that are not UTF-8 survive as surrogates."""
        return [raw.decode("utf-8", "surrogateescape") for raw in self.raw_strings(tag)]


def _read_exact(stream: IO[bytes], size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise PackageFormatError(f"file ends inside the {what}")
    return data


def _read_structure(stream: IO[bytes], what: str) -> Header:
    magic, version, count, size = _INTRO.unpack(_read_exact(stream, _INTRO.size, what))
    if magic != _HEADER_MAGIC or version != 1:
        raise PackageFormatError(f"bad {what} magic")
    if count > _MAX_TAGS or size > _MAX_DATA:
        raise PackageFormatError(f"{what} too large ({count} tags, {size} bytes)")
    entries = _read_exact(stream, count * _INDEX.size, what)
    store = _read_exact(stream, size, what)
    index: dict[int, tuple[int, int, int]] = {}
    for tag, kind, offset, items in _INDEX.iter_unpack(entries):
        if tag < 100:
            continue  # region tags (61-63) point at trailers with negative offsets
        if not 0 <= offset < size or not 1 <= items <= size:
            raise PackageFormatError(f"{what} entry for tag {tag} is out of range")
        index[tag] = (kind, offset, items)
    return Header(index, store)


def read_headers(stream: IO[bytes]) -> Header:
    """Read lead, signature and main header; return the main one, `stream` at the payload."""
    lead = stream.read(_LEAD.size)
    if lead[:4] != _LEAD_MAGIC:
        raise NotAnRpm("bad lead magic")
    if len(lead) != _LEAD.size:
        raise PackageFormatError("file ends inside the lead")
    _, major, _, _, _, _, _, signature_type, _ = _LEAD.unpack(lead)
    if major < 3 or signature_type != _SIGNATURE_IN_HEADER:
        raise PackageFormatError(f"unsupported lead (format {major}, signature {signature_type})")
    # Signatures and digests are the package source's business; only the size is used.
    signature = _read_structure(stream, "signature header")
    # The signature header is padded to a multiple of 8 bytes.
    _read_exact(stream, -(stream.tell() - _LEAD.size) % 8, "signature header")
    start = stream.tell()
    header = _read_structure(stream, "main header")
    # Size of main header + compressed payload: a cut-off end is found before any
    # decompressor has to notice (python-zstandard does not).
    expected = signature.integer(_SIGTAG_LONGSIZE) or signature.integer(_SIGTAG_SIZE)
    available = os.fstat(stream.fileno()).st_size - start
    if expected is not None and available < expected:
        raise PackageFormatError(f"file ends {expected - available} bytes early")
    return header


# ---------------------------------------------------------------- metadata records


@dataclass(frozen=True, slots=True)
class Dependency:
    """One Provides/Requires/... entry: `flags` are rpmsenseFlags, `version` an EVR or ""."""

    name: str
    flags: int = 0
    version: str = ""

    @property
    def op(self) -> str | None:
        """'<', '<=', '=', '>=', '>' or None for an unversioned dependency."""
        sense = self.flags & SENSE_MASK
        if not sense:
            return None
        return "".join(
            sign for bit, sign in ((LESS, "<"), (GREATER, ">"), (EQUAL, "=")) if sense & bit
        )

    @property
    def is_rich(self) -> bool:
        """A boolean dependency such as ``(a with b)``, left to the resolver to parse."""
        return self.name.startswith("(")

    def __str__(self) -> str:
        # As `rpm -q --requires` prints it (rpmdsNewDNEVR).
        text = f"{self.name} {self.op}" if self.op else self.name
        return f"{text} {self.version}" if self.version else text


@dataclass(frozen=True, slots=True)
class Scriptlet:
    """One install/erase scriptlet as the header stores it.

    `program` is the interpreter and its arguments as the header gives them
    (``("<lua>",)`` for Lua; ``()`` when the header names none and rpm uses
    /bin/sh). A scriptlet written ``%post -p /sbin/ldconfig`` has `body` None:
    rpm runs the program itself. `flags` are rpmscriptFlags (1 expand macros,
    2 expand a query format, 4 critical).
    """

    kind: str  # pretrans, pre, post, preun, postun, posttrans, preuntrans, postuntrans, verify
    body: bytes | None
    program: tuple[str, ...]
    flags: int = 0

    @property
    def interpreter(self) -> str:
        return " ".join(self.program) or "/bin/sh"


@dataclass(frozen=True, slots=True)
class Trigger:
    """A trigger scriptlet and the conditions that fire it.

    `scope` is "package" (%trigger*), "file" (%filetrigger*) or "transfile"
    (%transfiletrigger*); `kind` is rpm's word: "in", "un", "postun" or "prein".
    The conditions of file triggers are path prefixes.
    """

    scope: str
    kind: str
    conditions: tuple[Dependency, ...]
    body: bytes
    program: tuple[str, ...]
    flags: int = 0
    priority: int | None = None  # file triggers only

    @property
    def interpreter(self) -> str:
        return " ".join(self.program) or "/bin/sh"


def evr_text(epoch: int | None, version: str, release: str) -> str:
    """`[E:]V-R` as rpm prints it (no epoch when the header has none)."""
    return f"{'' if epoch is None else f'{epoch}:'}{version}-{release}"


def nevra_text(name: str, evr: str, arch: str, is_source: bool) -> str:
    return f"{name}-{evr}.{'src' if is_source else arch}"


@dataclass(frozen=True, slots=True)
class RpmHeader:
    """What indexing needs to know of one .rpm, from its header alone."""

    name: str
    epoch: int | None
    version: str
    release: str
    arch: str
    source_rpm: str | None  # None for a source package
    provides: tuple[Dependency, ...] = ()
    requires: tuple[Dependency, ...] = ()
    conflicts: tuple[Dependency, ...] = ()
    obsoletes: tuple[Dependency, ...] = ()
    recommends: tuple[Dependency, ...] = ()
    suggests: tuple[Dependency, ...] = ()
    supplements: tuple[Dependency, ...] = ()
    enhances: tuple[Dependency, ...] = ()
    files: tuple[str, ...] = ()  # every path the package owns, %ghost included

    @property
    def is_source(self) -> bool:
        return self.source_rpm is None

    @property
    def evr(self) -> str:
        return evr_text(self.epoch, self.version, self.release)

    @property
    def nevra(self) -> str:
        return nevra_text(self.name, self.evr, self.arch, self.is_source)


# ---------------------------------------------------------------- reading them


def _dependencies(header: Header, kind: str) -> list[Dependency]:
    """The KIND (REQUIRE, PROVIDE, ..., OLDSUGGESTS) dependencies."""
    names = header.strings(Tag[f"{kind}NAME"])
    flags = header.integers(Tag[f"{kind}FLAGS"]) or (0,) * len(names)
    versions = header.strings(Tag[f"{kind}VERSION"]) or [""] * len(names)
    if not len(names) == len(flags) == len(versions):
        raise PackageFormatError(f"the {kind.lower()} arrays differ in length")
    return [Dependency(*dep) for dep in zip(names, flags, versions, strict=True)]


def _weak(header: Header, kind: str, old: str, strong: bool) -> tuple[Dependency, ...]:
    """A weak-dependency kind, as rpm -q reads it: SUSE packages built before
    rpm 4.12 keep all four kinds in two old tags, told apart by SENSE_STRONG."""
    if Tag[f"{kind}NAME"] in header:
        return tuple(_dependencies(header, kind))
    return tuple(d for d in _dependencies(header, old) if bool(d.flags & SENSE_STRONG) == strong)


def file_paths(header: Header) -> list[str]:
    """The header's file names, in header order (sorted by path)."""
    if Tag.BASENAMES not in header:
        return header.paths(Tag.OLDFILENAMES)  # packages from before rpm 4.0
    basenames, dirnames = header.paths(Tag.BASENAMES), header.paths(Tag.DIRNAMES)
    indexes = header.integers(Tag.DIRINDEXES)
    if len(indexes) != len(basenames) or any(i >= len(dirnames) for i in indexes):
        raise PackageFormatError("the file name arrays are inconsistent")
    return [dirnames[i] + base for i, base in zip(indexes, basenames, strict=True)]


def package_header(header: Header, paths: list[str]) -> RpmHeader:
    name, version, release = (header.string(t) for t in (Tag.NAME, Tag.VERSION, Tag.RELEASE))
    if name is None or version is None or release is None:
        raise PackageFormatError("the header has no name, version or release")

    def deps(kind: str) -> tuple[Dependency, ...]:
        return tuple(_dependencies(header, kind))

    return RpmHeader(
        name=name,
        epoch=header.integer(Tag.EPOCH),
        version=version,
        release=release,
        arch=header.string(Tag.ARCH) or "noarch",
        source_rpm=header.string(Tag.SOURCERPM),
        provides=deps("PROVIDE"),
        requires=deps("REQUIRE"),
        conflicts=deps("CONFLICT"),
        obsoletes=deps("OBSOLETE"),
        recommends=_weak(header, "RECOMMEND", "OLDSUGGESTS", strong=True),
        suggests=_weak(header, "SUGGEST", "OLDSUGGESTS", strong=False),
        supplements=_weak(header, "SUPPLEMENT", "OLDENHANCES", strong=True),
        enhances=_weak(header, "ENHANCE", "OLDENHANCES", strong=False),
        files=tuple(paths),
    )


# Scriptlet kind -> the tag prefix of its body, PROG and FLAGS tags.
_SCRIPTLETS = {
    "pretrans": "PRETRANS",
    "pre": "PREIN",
    "post": "POSTIN",
    "preun": "PREUN",
    "postun": "POSTUN",
    "posttrans": "POSTTRANS",
    "preuntrans": "PREUNTRANS",
    "postuntrans": "POSTUNTRANS",
    "verify": "VERIFYSCRIPT",
}


def scriptlets(header: Header) -> tuple[Scriptlet, ...]:
    found = []
    for kind, prefix in _SCRIPTLETS.items():
        body, program = Tag[prefix], Tag[f"{prefix}PROG"]
        # rpm runs a scriptlet that has a body, a program (`-p /sbin/ldconfig`) or both.
        if body in header or program in header:
            found.append(
                Scriptlet(
                    kind=kind,
                    body=header.blob(body),
                    program=tuple(header.strings(program)),
                    flags=header.integer(Tag[f"{prefix}FLAGS"]) or 0,
                )
            )
    return tuple(found)


def _trigger_kind(flags: int) -> str:
    for bit, word in (
        (SENSE_TRIGGERPREIN, "prein"),
        (SENSE_TRIGGERIN, "in"),
        (SENSE_TRIGGERUN, "un"),
        (SENSE_TRIGGERPOSTUN, "postun"),
    ):
        if flags & bit:
            return word
    return ""


def triggers(header: Header) -> tuple[Trigger, ...]:
    found = []
    for scope, prefix in (
        ("package", "TRIGGER"),
        ("file", "FILETRIGGER"),
        ("transfile", "TRANSFILETRIGGER"),
    ):
        bodies = header.raw_strings(Tag[f"{prefix}SCRIPTS"])
        if not bodies:
            continue
        programs = header.strings(Tag[f"{prefix}SCRIPTPROG"])
        flags = header.integers(Tag[f"{prefix}SCRIPTFLAGS"])
        priorities = header.integers(Tag[f"{prefix}PRIORITIES"]) if scope != "package" else ()
        conditions = _dependencies(header, prefix)
        owners = header.integers(Tag[f"{prefix}INDEX"])
        if len(owners) != len(conditions) or any(owner >= len(bodies) for owner in owners):
            raise PackageFormatError(f"the {prefix.lower()} index is inconsistent")
        for number, body in enumerate(bodies):
            mine = tuple(c for c, owner in zip(conditions, owners, strict=True) if owner == number)
            found.append(
                Trigger(
                    scope=scope,
                    kind=_trigger_kind(mine[0].flags) if mine else "",
                    conditions=mine,
                    body=body,
                    program=(programs[number],) if number < len(programs) else (),
                    flags=flags[number] if number < len(flags) else 0,
                    priority=priorities[number] if number < len(priorities) else None,
                )
            )
    return tuple(found)
