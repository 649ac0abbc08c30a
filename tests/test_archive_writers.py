"""cpio and tar writers on hand-made entries: hardlinks, refusals, determinism."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

import pytest

from supermin.entry import EntryKind, FileEntry
from supermin.errors import OutputError
from supermin.outputs.archives import write_cpio, write_tar
from supermin.outputs.compression import Compression


def _entries(tmp_path: Path) -> list[FileEntry]:
    blob = tmp_path / "blob"
    blob.write_bytes(b"shared\n")
    p = PurePosixPath
    return [
        FileEntry(p("/"), EntryKind.DIR, 0o755),
        FileEntry(p("/a"), EntryKind.FILE, 0o644, uid=100000, user="big", size=7, content=blob),
        FileEntry(p("/b"), EntryKind.HARDLINK, 0o644, uid=100000, user="big", target="/a"),
        FileEntry(p("/c"), EntryKind.HARDLINK, 0o644, uid=100000, user="big", target="/a"),
    ]


def test_newc_hardlinks_share_an_inode_with_the_data_on_the_last_name(tmp_path: Path) -> None:
    archive = tmp_path / "x.cpio"
    write_cpio(_entries(tmp_path), archive, Compression.NONE)
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet", "--numeric-uid-gid"],
        stdin=archive.open("rb"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    sizes = {line.split()[-1]: int(line.split()[4]) for line in listing}
    assert sizes == {".": 0, "a": 0, "b": 0, "c": 7}
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], stdin=archive.open("rb"), cwd=out, check=True)
    assert (out / "a").read_text() == "shared\n"
    assert (out / "a").stat().st_ino == (out / "c").stat().st_ino
    assert (out / "a").stat().st_uid == 100000


def test_same_entries_same_bytes(tmp_path: Path) -> None:
    for kind in Compression:
        write_cpio(_entries(tmp_path), tmp_path / f"1.{kind}", kind)
        write_cpio(_entries(tmp_path), tmp_path / f"2.{kind}", kind)
        assert (tmp_path / f"1.{kind}").read_bytes() == (tmp_path / f"2.{kind}").read_bytes()


def test_tar_refuses_a_socket_naming_it(tmp_path: Path) -> None:
    entries = [*_entries(tmp_path), FileEntry(PurePosixPath("/run/sock"), EntryKind.SOCKET, 0o755)]
    with pytest.raises(OutputError, match="/run/sock"):
        write_tar(entries, tmp_path / "x.tar", Compression.NONE)
