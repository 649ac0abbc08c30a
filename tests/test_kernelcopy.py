"""kernelcopy: files and spans copied in the kernel; every fallback gives the same bytes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from supermin import kernelcopy
from supermin.kernelcopy import copy_file, copy_range

DATA = os.urandom(3 << 20) + b"tail"


def _refuse(code: int) -> object:
    def refused(*args: object) -> int:
        raise OSError(code, os.strerror(code))

    return refused


@pytest.mark.parametrize("refused", [(), ("copy_file_range",), ("copy_file_range", "sendfile")])
def test_copy_file_gives_the_same_bytes_whichever_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: tuple[str, ...]
) -> None:
    source = tmp_path / "source"
    source.write_bytes(DATA)
    for call in refused:  # as across file system types, or on file systems without support
        monkeypatch.setattr(kernelcopy.os, call, _refuse(errno.EXDEV))
    copy_file(source, tmp_path / "copy", 0o640)
    assert (tmp_path / "copy").read_bytes() == DATA
    assert (tmp_path / "copy").stat().st_mode & 0o777 == 0o640 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_copy_file_never_replaces_a_file(tmp_path: Path) -> None:
    (tmp_path / "source").write_bytes(DATA)
    (tmp_path / "there").write_bytes(b"kept")
    with pytest.raises(FileExistsError):
        copy_file(tmp_path / "source", tmp_path / "there")
    assert (tmp_path / "there").read_bytes() == b"kept"


def test_a_failed_copy_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "source").write_bytes(DATA)
    real = os.copy_file_range

    def full_after_a_megabyte(src: int, dst: int, count: int, offset_src: int) -> int:
        if offset_src >= 1 << 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, min(count, 1 << 20), offset_src)

    monkeypatch.setattr(kernelcopy.os, "copy_file_range", full_after_a_megabyte)
    with pytest.raises(OSError) as raised:
        copy_file(tmp_path / "source", tmp_path / "copy")
    assert raised.value.errno == errno.ENOSPC  # not retried another way once written
    assert not (tmp_path / "copy").exists()


def test_copy_range_takes_a_span_and_leaves_the_source_position(tmp_path: Path) -> None:
    (tmp_path / "source").write_bytes(DATA)
    src = os.open(tmp_path / "source", os.O_RDONLY)
    dst = os.open(tmp_path / "span", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        assert copy_range(src, dst, 4096, 1 << 20) == 1 << 20
        assert os.lseek(src, 0, os.SEEK_CUR) == 0
        # A source shorter than asked: what it had.
        assert copy_range(src, dst, len(DATA) - 4, 100) == 4
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "span").read_bytes() == DATA[4096 : 4096 + (1 << 20)] + b"tail"
