"""The ELF interpreter and library closure of real programs, judged by ldd."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from supermin.elf import elf_links
from supermin.sharedlibs import FileView, runtime_files


def _ldd(program: str) -> set[str]:
    """The sonames and interpreter ldd lists for `program` (vdso left out)."""
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        match = re.match(r"\s*(\S+)", line)
        if match and not match.group(1).startswith("linux-vdso"):
            names.add(PurePosixPath(match.group(1)).name)
    return names


@pytest.mark.parametrize("program", ["/usr/bin/bash", "/usr/bin/qemu-img", "/usr/bin/ls"])
def test_closure_matches_ldd(program: str) -> None:
    files = runtime_files(Path(program).read_bytes(), FileView(host_root=Path("/")))
    assert files is not None
    assert {placed.name for placed, _ in files} == _ldd(program)
    links = elf_links(Path(program).read_bytes())
    assert links is not None and links.interpreter == str(files[0][0])
    for placed, source in files:
        assert source.path.is_file() and source.offset is None and placed.is_absolute()


def test_static_program_needs_nothing() -> None:
    assert runtime_files(Path("/bin/busybox").read_bytes(), FileView(host_root=Path("/"))) == []


def test_missing_library_is_none(tmp_path: Path) -> None:
    """A root without the libraries: None, so the caller looks elsewhere."""
    assert runtime_files(Path("/usr/bin/bash").read_bytes(), FileView(host_root=tmp_path)) is None
    assert elf_links(b"#!/bin/sh\n" + b"\0" * 64) is None
