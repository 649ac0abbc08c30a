"""Read a .deb as a stream: ar container, control.tar.* in memory, data.tar.* streamed.

libarchive does the ar, tar and decompression work (xz, gzip, zstd, bzip2, none);
the data member is piped from the outer ar reader into an inner tar reader,
so contents go straight to the spool and no data.tar is ever held whole.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import libarchive
import libarchive.exception

from supermin.errors import ArchiveError
from supermin.packages import PackageContents
from supermin.spool import Spool
from supermin.tarstream import member_data, tar_entries

_REDOWNLOAD = "download the package again or remove it from the source"

# The inner reader's buffer, which libarchive-c allocates and zeroes for each
# package: the outer reader reads the .deb 64 KiB at a time, so no block it
# hands over is larger, and a bigger buffer would be zeroed for nothing.
_INNER_BLOCK = 64 << 10


class _BlockStream(io.RawIOBase):
    """A readable file over an iterator of byte blocks (the outer ar member).

    The blocks come from tarstream.member_data, copied once out of
    libarchive's buffer: libarchive-c's get_blocks zeroes a new 1 MiB buffer
    for each member and copies all of it for every block, however short.
    """

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._pending = memoryview(b"")
        # An error of the outer reader cannot cross the C callback: keep it and
        # report it once the inner reader gives up.
        self.error: libarchive.exception.ArchiveError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                block = next(self._blocks, b"")
            except libarchive.exception.ArchiveError as err:
                self.error = err
                return -1
            if not block:
                return 0
            self._pending = memoryview(block)
        # libarchive hands over a ctypes array, whose slice assignment copies byte
        # by byte: a memoryview over it copies in one go.
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _control_files(blob: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with libarchive.memory_reader(blob) as control:
        for member in control:
            name = member.pathname.removeprefix("./")
            if member.isreg and name and "/" not in name:
                files[name] = b"".join(member_data(control, member.size))
    return files


def _corrupt(deb: Path, err: libarchive.exception.ArchiveError) -> ArchiveError:
    return ArchiveError(f"{deb}: corrupt or truncated .deb ({err.msg})", _REDOWNLOAD)


def read_deb(deb: Path, spool: Spool, origin: str) -> PackageContents:
    """Open `deb` into its file entries (contents spooled) and control files."""
    control: dict[str, bytes] | None = None
    entries = None
    try:
        with libarchive.file_reader(str(deb), format_name="ar") as outer:
            for member in outer:
                name = member.pathname
                if name.startswith("control.tar"):
                    control = _control_files(b"".join(member_data(outer, member.size)))
                elif name.startswith("data.tar"):
                    stream = _BlockStream(member_data(outer, member.size))
                    try:
                        with libarchive.stream_reader(
                            stream, format_name="tar", block_size=_INNER_BLOCK
                        ) as data:
                            entries = tar_entries(data, spool, origin, str(deb))
                    except libarchive.exception.ArchiveError as err:
                        raise stream.error or err from None
    except libarchive.exception.ArchiveError as err:
        raise _corrupt(deb, err) from None
    except OSError as err:
        raise ArchiveError(f"cannot read {deb}: {err.strerror}") from None
    if control is None or "control" not in control or entries is None:
        missing = "control.tar" if control is None or "control" not in control else "data.tar"
        raise ArchiveError(f"{deb}: not a Debian package (no {missing} member)", _REDOWNLOAD)
    return PackageContents(entries=entries, control_files=control)


def read_control(deb: Path) -> dict[str, bytes]:
    """Only the control files of `deb` (stops before the data member)."""
    try:
        with libarchive.file_reader(str(deb), format_name="ar") as outer:
            for member in outer:
                if member.pathname.startswith("control.tar"):
                    return _control_files(b"".join(member_data(outer, member.size)))
    except libarchive.exception.ArchiveError as err:
        raise _corrupt(deb, err) from None
    except OSError as err:
        raise ArchiveError(f"cannot read {deb}: {err.strerror}") from None
    raise ArchiveError(f"{deb}: not a Debian package (no control.tar member)", _REDOWNLOAD)
