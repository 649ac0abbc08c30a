"""Member contents kept in one pack per archive, and files written by several threads."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import libarchive
import pytest

import supermin.tarstream
from supermin.content import Content, read_content
from supermin.entry import EntryKind, FileEntry
from supermin.errors import ArchiveError, OutputError
from supermin.outputs.archives import write_tar
from supermin.outputs.chroot import _plain_tree, write_chroot
from supermin.outputs.compression import Compression
from supermin.spool import Spool
from supermin.tarstream import tar_entries

MEMBERS = [b"first\n", b"", os.urandom(3 << 20), b"last"]


def _packed(tmp_path: Path) -> list[FileEntry]:
    entries = [FileEntry(PurePosixPath("/"), EntryKind.DIR, 0o755)]
    with Spool(tmp_path / "spool").pack() as pack:
        for number, data in enumerate(MEMBERS):
            path, offset, size = pack.store(
                [data[: len(data) // 2], data[len(data) // 2 :]], len(data)
            )
            entries.append(
                FileEntry(
                    PurePosixPath(f"/m{number}"),
                    EntryKind.FILE,
                    0o644,
                    size=size,
                    content=path,
                    content_offset=offset,
                )
            )
    return entries


def test_a_pack_holds_every_member_once_in_order(tmp_path: Path) -> None:
    entries = _packed(tmp_path)[1:]
    assert len({e.content for e in entries}) == 1  # one file for the archive
    # A member of a block or more starts on a block boundary (reflinks share whole blocks).
    assert [e.content_offset for e in entries] == [0, 6, 4096, 4096 + (3 << 20)]
    assert [read_content(e) for e in entries] == MEMBERS
    assert entries[0].content is not None
    assert entries[0].content.stat().st_size == 4096 + (3 << 20) + 4


def test_outputs_copy_just_the_members_span(tmp_path: Path) -> None:
    entries = _packed(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    write_chroot(entries, root, privileged=False)
    assert [(root / f"m{n}").read_bytes() for n in range(len(MEMBERS))] == MEMBERS
    write_tar(entries, tmp_path / "out.tar", Compression.NONE)
    with tarfile.open(tmp_path / "out.tar") as tar:
        read = [tar.extractfile(f"./m{n}") for n in range(len(MEMBERS))]
        assert [f.read() if f else None for f in read] == MEMBERS


def test_a_pack_cut_short_is_an_error_not_short_files(tmp_path: Path) -> None:
    entries = _packed(tmp_path)
    pack = entries[1].content
    assert pack is not None
    os.truncate(pack, 4096 + 100)  # the big member loses all but 100 bytes
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(OutputError, match=r"/m2 into .*holds 100 bytes, the entry says 3145728"):
        write_chroot(entries, root, privileged=False, jobs=1)
    with pytest.raises(OutputError, match=r"/m2: expected 3145728 bytes .* found 100"):
        write_tar(entries, tmp_path / "out.tar", Compression.NONE)


def test_a_pack_keeps_track_of_its_descriptor(tmp_path: Path) -> None:
    """The pack knows where its descriptor is without asking, and notices when it is wrong."""
    with Spool(tmp_path / "spool").pack() as pack:
        pack.store([b"abc"], 3)
        pack.store([os.urandom(5000)], 5000)  # aligned: the descriptor had to move
        assert pack.where_expected()
        os.write(pack.fd, b"behind its back")
        assert not pack.where_expected()


def test_a_member_longer_than_its_header_says_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libarchive writes a member's bytes itself; were there more or fewer than the header
    gave, every later member's offset would be wrong: the archive is refused instead."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("a", "b"):
        (source / name).write_bytes(name.encode() * 100)
    archive = tmp_path / "plain.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(source), "a", "b"], check=True)
    with libarchive.file_reader(str(archive)) as reader:
        entries = tar_entries(reader, Spool(tmp_path / "spool"), "test", str(archive))
    assert [read_content(e) for e in entries] == [b"a" * 100, b"b" * 100]
    told = supermin.tarstream._size
    monkeypatch.setattr(supermin.tarstream, "_size", lambda header: told(header) - 1)
    refused = pytest.raises(ArchiveError, match="plain.tar: libarchive wrote a member of another")
    with libarchive.file_reader(str(archive)) as reader, refused:
        tar_entries(reader, Spool(tmp_path / "spool2"), "test", str(archive))


@pytest.mark.parametrize("name", [".", "./."])
def test_a_member_that_would_replace_the_root_is_refused(tmp_path: Path, name: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member = tarfile.TarInfo(name)
        member.size = 4
        tar.addfile(member, io.BytesIO(b"evil"))
    with (
        libarchive.memory_reader(buffer.getvalue()) as reader,
        pytest.raises(ArchiveError, match="hostile.tar: member .* would replace the root"),
    ):
        tar_entries(reader, Spool(tmp_path / "spool"), "test", "hostile.tar")


def test_content_of_a_host_file_is_the_whole_file(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.write_bytes(b"grown since it was listed")
    content = Content(host)
    fd, actual = content.open()
    os.close(fd)
    assert actual == 25 and content.read() == b"grown since it was listed"


@pytest.mark.parametrize("fmt", ["gnu", "posix-0.1", "posix-1.0"])
def test_sparse_tar_members_read_back_whole(tmp_path: Path, fmt: str) -> None:
    """Members of a tar after the first go into the middle of a pack; sparse ones too.

    libarchive's own member-to-descriptor copy cannot skip holes there, so
    sparse members take the block-by-block path: the bytes must come back
    whole, holes as zeros, a member ending in a hole included (GNU tar's
    sparse formats, each of which libarchive reports differently).
    """
    source = tmp_path / "src"
    source.mkdir()
    (source / "a-plain").write_bytes(b"plain\n" * 1000)
    with open(source / "b-holes", "wb") as out:
        out.truncate(3 << 20)
        out.seek(100_000)
        out.write(b"data in the middle")
    (source / "c-all-hole").write_bytes(b"")
    os.truncate(source / "c-all-hole", 2 << 20)
    (source / "d-last").write_bytes(b"after the holes")
    with open(source / "e-trailing-hole", "wb") as out:
        out.write(os.urandom(10_000))
        out.truncate(1 << 20)
    names = sorted(p.name for p in source.iterdir())
    archive = tmp_path / "sparse.tar"
    style = ["--format=gnu"] if fmt == "gnu" else ["--format=posix", f"--sparse-version={fmt[6:]}"]
    subprocess.run(
        ["tar", "--sparse", *style, "-cf", str(archive), "-C", str(source), *names], check=True
    )
    with libarchive.file_reader(str(archive)) as reader:
        entries = tar_entries(reader, Spool(tmp_path / "spool"), "test", str(archive))
    assert [e.path.name for e in entries] == names
    for entry in entries:
        assert read_content(entry) == (source / entry.path.name).read_bytes(), entry.path


# ------------------------------------------------------------------ parallel chroot


def _tree(tmp_path: Path, files: int) -> list[FileEntry]:
    source = tmp_path / "data"
    source.write_bytes(b"x" * 1000)
    entries = [FileEntry(PurePosixPath("/"), EntryKind.DIR, 0o755)]
    for d in range(10):
        entries.append(FileEntry(PurePosixPath(f"/d{d}"), EntryKind.DIR, 0o750, mtime=7))
        for f in range(files // 10):
            entries.append(
                FileEntry(
                    PurePosixPath(f"/d{d}/f{f:04}"),
                    EntryKind.FILE,
                    0o640 | (f % 2) * 0o111,
                    mtime=1000 + f,
                    size=1000,
                    content=source,
                )
            )
        entries.append(
            FileEntry(PurePosixPath(f"/d{d}/link"), EntryKind.SYMLINK, 0o777, target="f0000")
        )
        entries.append(
            FileEntry(
                PurePosixPath(f"/d{d}/zz-hard"), EntryKind.HARDLINK, 0o640, target=f"/d{d}/f0000"
            )
        )
    return entries


def _listing(root: Path) -> dict[str, tuple[int, int, int, int]]:
    result = {}
    for top, dirs, names in os.walk(root):
        for name in dirs + names:
            st = os.lstat(os.path.join(top, name))
            result[os.path.relpath(os.path.join(top, name), root)] = (
                st.st_mode,
                st.st_size,
                st.st_mtime_ns,
                st.st_nlink,
            )
    return result


def test_threads_write_the_same_tree_as_one(tmp_path: Path) -> None:
    entries = _tree(tmp_path, 2000)
    assert _plain_tree(entries)  # so jobs=4 really takes the threaded path
    assert not _plain_tree([*entries, entries[5]])  # a path twice: one at a time
    trees = []
    for jobs in (1, 4):
        root = tmp_path / f"root{jobs}"
        root.mkdir()
        write_chroot(entries, root, privileged=False, jobs=jobs)
        trees.append(_listing(root))
    assert trees[0] == trees[1]
    assert len(trees[0]) == 2000 + 10 * 3
    assert trees[1]["d3/zz-hard"][3] == 2  # linked to its file


def test_a_failure_in_one_thread_names_its_entry_and_closes_everything(tmp_path: Path) -> None:
    entries = _tree(tmp_path, 2000)
    broken = next(i for i, e in enumerate(entries) if str(e.path) == "/d7/f0100")
    entries[broken] = FileEntry(
        entries[broken].path, EntryKind.FILE, 0o644, size=5, content=tmp_path / "gone"
    )
    root = tmp_path / "root"
    root.mkdir()
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OutputError, match="cannot write /d7/f0100 into .*cannot read"):
        write_chroot(entries, root, privileged=False, jobs=4)
    assert len(os.listdir("/proc/self/fd")) == before
