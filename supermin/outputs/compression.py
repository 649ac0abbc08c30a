"""Stream compressors for archive outputs, chosen so the Linux kernel can unpack them.

Compression happens here rather than in libarchive so that it is reproducible
(gzip header with mtime 0) and kernel-compatible (xz with a CRC32 check, which
the kernel's xz decoder requires).
"""

from __future__ import annotations

import lzma
import zlib
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from supermin.errors import UsageError


class Compression(StrEnum):
    ZSTD = "zstd"
    XZ = "xz"
    GZIP = "gzip"
    NONE = "none"


class Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes, /) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class _Zstd:
    def __init__(self) -> None:
        # zstd(1)'s default level: fast, and its window suits the kernel's decoder.
        # On every core (threads=-1): zstd's multithreaded output does not depend
        # on the number of workers, so builds stay byte-identical across machines.
        import zstandard  # ~14 ms to import: not for the builds that never compress

        self._stream = zstandard.ZstdCompressor(level=3, threads=-1).compressobj()

    def compress(self, data: bytes, /) -> bytes:
        return self._stream.compress(data)

    def flush(self) -> bytes:
        return self._stream.flush()


def new_compressor(kind: Compression) -> Compressor:
    match kind:
        case Compression.ZSTD:
            return _Zstd()
        case Compression.XZ:
            return lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
        case Compression.GZIP:
            # wbits 31: a gzip header, written with mtime 0 and no name.
            return zlib.compressobj(6, zlib.DEFLATED, 31)
    return _Identity()


def parse_compression(word: str) -> Compression:
    try:
        return Compression(word)
    except ValueError:
        choices = ", ".join(c.value for c in Compression)
        raise UsageError(f"unknown compression {word!r}", f"use one of {choices}") from None


_TAR_SUFFIXES = {
    ".tar": Compression.NONE,
    ".tar.gz": Compression.GZIP,
    ".tgz": Compression.GZIP,
    ".tar.xz": Compression.XZ,
    ".txz": Compression.XZ,
    ".tar.zst": Compression.ZSTD,
    ".tzst": Compression.ZSTD,
}


def compression_from_name(path: Path) -> Compression:
    """A tar output's compression, from its file name as tar(1) users expect."""
    name = path.name
    for suffix, kind in sorted(_TAR_SUFFIXES.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return kind
    raise UsageError(
        f"cannot tell the tar compression from the name {name!r}",
        "name the output FILE.tar, .tar.gz, .tar.xz or .tar.zst",
    )
