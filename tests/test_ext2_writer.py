"""The ext2 writer, judged by e2fsprogs (e2fsck, debugfs, dumpe2fs) and by the kernel.

Every image must pass `e2fsck -fn`; its contents are read back with debugfs (and,
as root, through a read-only loop mount) and compared with the entries.
"""

from __future__ import annotations

import dataclasses
import errno
import filecmp
import hashlib
import os
import pickle
import re
import shutil
import stat
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath

import pytest
from support.debdata import cache_root
from support.privileges import NOBODY, make_world_dir, run_unprivileged

from supermin.content import read_content
from supermin.entry import EntryKind, FileEntry
from supermin.errors import OutputError
from supermin.outputs.ext2 import EarlyCopies, parse_size, write_ext2
from supermin.outputs.ext2.blockmap import (
    POINTERS,
    BlockMap,
    Run,
    indirect_blocks,
    map_blocks,
    max_data_blocks,
)
from supermin.outputs.ext2.tree import Node, pack_directory

T0 = 1_600_000_000
FS_TIME = 1_700_000_000
FS_UUID = uuid.UUID("5e4e3f1c-0b6a-4f43-9a3e-2b3c4d5e6f70").bytes
GIB = 1 << 30
MIB = 1 << 20
BIG = os.urandom(20 * MIB + 123)  # past the single-indirect 4 MiB + 48 KiB: double indirect
MANY = 10_000

# (kind, mode, uid, gid, size, sha256, symlink target, rdev, hardlink group)
Record = tuple[str, int, int, int, int, str, str, tuple[int, int], str]
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


# ------------------------------------------------------------------ building entries


def _entry(path: str, kind: EntryKind, mode: int, **fields: object) -> FileEntry:
    fields.setdefault("mtime", T0)
    return FileEntry(PurePosixPath(path), kind, mode, **fields)  # type: ignore[arg-type]


class Contents:
    """Content files for FILE entries, one per file, in a directory of our choosing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def file(self, path: str, mode: int, data: bytes, **fields: object) -> FileEntry:
        self.count += 1
        source = self.directory / f"c{self.count}"
        source.write_bytes(data)
        source.chmod(0o644)
        return _entry(path, EntryKind.FILE, mode, size=len(data), content=source, **fields)


def _sorted(entries: list[FileEntry]) -> list[FileEntry]:
    return sorted(entries, key=lambda e: e.path.parts)


def stress_entries(contents: Contents) -> list[FileEntry]:
    """Every kind of entry, the awkward sizes and names, a 10,000-entry directory."""
    dirs = ["/", "/bin", "/dev", "/etc", "/home", "/links", "/many", "/times"]
    entries = [_entry(d, EntryKind.DIR, 0o755) for d in dirs]
    entries += [
        contents.file("/bin/big", 0o755, BIG),
        contents.file("/bin/five", 0o644, os.urandom(5 * 4096 - 7)),
        _entry("/bin/empty", EntryKind.FILE, 0o644),
        contents.file("/bin/empty-content", 0o644, b""),
        contents.file("/bin/su", 0o4755, b"#!/bin/sh\necho root\n"),
        contents.file("/bin/sg", 0o2755, b"setgid\n", gid=42),
        contents.file("/bin/hl-a", 0o750, b"one inode, three names\n", uid=3, gid=4),
        _entry("/bin/hl-b", EntryKind.HARDLINK, 0o750, uid=3, gid=4, target="/bin/hl-a"),
        _entry("/etc/hl-c", EntryKind.HARDLINK, 0o750, uid=3, gid=4, target="/bin/hl-a"),
        contents.file("/etc/zero-mode", 0, b"nobody may read this\n"),
        _entry("/dev/null", EntryKind.CHAR, 0o666, rdev=(1, 3)),
        _entry("/dev/sda", EntryKind.BLOCK, 0o660, gid=6, rdev=(8, 0)),
        _entry("/dev/nvme", EntryKind.BLOCK, 0o660, rdev=(259, 300)),
        _entry("/dev/wide-minor", EntryKind.CHAR, 0o600, rdev=(10, 70000)),
        _entry("/dev/initctl", EntryKind.FIFO, 0o600),
        _entry("/dev/log", EntryKind.SOCKET, 0o666),
        _entry("/home/user", EntryKind.DIR, 0o700, uid=100000, gid=100000),
        contents.file("/home/user/notes", 0o640, b"high ids\n", uid=100000, gid=100000),
        _entry("/links/short", EntryKind.SYMLINK, 0o777, target="../bin/su"),
        _entry("/links/long", EntryKind.SYMLINK, 0o777, target="/" + "d" * 199),
        _entry("/links/fast-max", EntryKind.SYMLINK, 0o777, target="f" * 59),
        _entry("/links/slow-min", EntryKind.SYMLINK, 0o777, target="s" * 60),
        _entry("/links/longest", EntryKind.SYMLINK, 0o777, target="L" * 4095),
        _entry("/tmp", EntryKind.DIR, 0o1777),
        contents.file("/odd name \u00e9" + os.fsdecode(b"\xff"), 0o644, b"odd\n"),
        contents.file("/" + "n" * 255, 0o644, b"longest name\n"),
        _entry("/times/before-1970", EntryKind.FIFO, 0o644, mtime=-1000),
        _entry("/times/after-2038", EntryKind.FIFO, 0o644, mtime=2**31 + 100),
    ]
    # Names of many lengths, so that blocks end at every possible offset.
    entries += [
        _entry(f"/many/entry-{i:05d}-{'x' * (i % 50)}", EntryKind.FILE, 0o644) for i in range(MANY)
    ]
    return _sorted(entries)


def expected_listing(entries: Sequence[FileEntry]) -> dict[str, Record]:
    names: dict[str, list[str]] = {}
    for entry in entries:
        if entry.kind is EntryKind.HARDLINK:
            names.setdefault(entry.target or "", [entry.target or ""]).append(str(entry.path))
    by_path = {str(e.path): e for e in entries}
    listing: dict[str, Record] = {}
    for entry in entries:
        path = str(entry.path)
        source = by_path[entry.target or ""] if entry.kind is EntryKind.HARDLINK else entry
        group = (entry.target or "") if entry.kind is EntryKind.HARDLINK else path
        is_file = source.kind is EntryKind.FILE
        listing[path] = (
            "file" if is_file else str(source.kind),
            source.mode,
            source.uid,
            source.gid,
            source.size if is_file else 0,
            _content_sha256(source) if is_file and source.content else EMPTY_SHA if is_file else "",
            (source.target or "") if source.kind is EntryKind.SYMLINK else "",
            source.rdev if source.kind in (EntryKind.CHAR, EntryKind.BLOCK) else (0, 0),
            min(names[group]) if group in names else "",
        )
    return listing


def _content_sha256(entry: FileEntry) -> str:
    return hashlib.sha256(read_content(entry)).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------ reading images back


def e2fsck(image: Path) -> str:
    proc = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert proc.returncode == 0, f"e2fsck -fn {image}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def debugfs(image: Path, commands: Sequence[str]) -> list[list[str]]:
    """Run debugfs commands in one process; the output lines of each command."""
    proc = subprocess.run(
        ["debugfs", "-f", "-", str(image)],
        input="".join(f"{c}\n" for c in commands).encode(),
        capture_output=True,
        check=True,
    )
    sections: list[list[str]] = []
    for line in proc.stdout.decode(errors="surrogateescape").splitlines():
        if line.startswith("debugfs: "):
            sections.append([])
        elif sections:
            sections[-1].append(line)
    assert len(sections) == len(commands), proc.stderr
    return sections


_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}
_DEVICE = re.compile(r"Device major/minor number: (\d+):(\d+)")


def debugfs_listing(image: Path, scratch: Path) -> tuple[dict[str, Record], dict[str, int]]:
    """Every path in the image as a Record, and its inode number, read by debugfs alone.

    Directories are walked by inode number (`ls -p <ino>`), so no name needs quoting.
    """
    found: dict[str, tuple[int, int, int, int, int]] = {}  # path -> ino, mode, uid, gid, size
    pending = [("/", 2)]
    while pending:
        sections = debugfs(image, [f"ls -p <{ino}>" for _, ino in pending])
        deeper: list[tuple[str, int]] = []
        for (directory, _), lines in zip(pending, sections, strict=True):
            for line in lines:
                fields = line.split("/")
                if len(fields) != 8:
                    continue
                ino, mode, uid, gid = (
                    int(fields[1]),
                    int(fields[2], 8),
                    int(fields[3]),
                    int(fields[4]),
                )
                name, size = fields[5], int(fields[6] or 0)
                if name == ".." or ino == 0:  # ino 0: an empty block, as in lost+found
                    continue
                path = directory if name == "." else str(PurePosixPath(directory) / name)
                found[path] = (ino, mode, uid, gid, size)
                if name != "." and stat.S_ISDIR(mode):
                    deeper.append((path, ino))
        pending = deeper
    return _records(image, scratch, found), {path: info[0] for path, info in found.items()}


def _records(
    image: Path, scratch: Path, found: dict[str, tuple[int, int, int, int, int]]
) -> dict[str, Record]:
    kinds = {path: _KINDS[stat.S_IFMT(info[1])] for path, info in found.items()}
    special = [p for p, k in kinds.items() if k in ("symlink", "char", "block")]
    stat_lines = debugfs(image, [f"stat <{found[p][0]}>" for p in special])
    stats = dict(zip(special, stat_lines, strict=True))
    slow = [p for p in special if kinds[p] == "symlink" and _fast_target(stats[p]) is None]
    dumped = [p for p, k in kinds.items() if k == "file" and found[p][4]] + slow
    scratch.mkdir(parents=True, exist_ok=True)
    debugfs(image, [f"dump <{found[p][0]}> {scratch}/{found[p][0]}" for p in dumped])
    inode_names: dict[int, list[str]] = {}
    for path, (ino, *_rest) in found.items():
        inode_names.setdefault(ino, []).append(path)
    records: dict[str, Record] = {}
    for path, (ino, mode, uid, gid, size) in found.items():
        kind = kinds[path]
        content = scratch / str(ino)
        target = ""
        if kind == "symlink":
            fast = _fast_target(stats[path])
            target = fast if fast is not None else os.fsdecode(content.read_bytes())
        rdev = (0, 0)
        if kind in ("char", "block"):
            match = _DEVICE.search("\n".join(stats[path]))
            assert match, stats[path]
            rdev = (int(match[1]), int(match[2]))
        sharing = inode_names[ino] if kind == "file" else []
        records[path] = (
            kind,
            stat.S_IMODE(mode),
            uid,
            gid,
            size if kind == "file" else 0,
            (_sha256(content) if size else EMPTY_SHA) if kind == "file" else "",
            target,
            rdev,
            min(sharing) if len(sharing) > 1 else "",
        )
    return records


def _fast_target(stat_lines: list[str]) -> str | None:
    for line in stat_lines:
        if line.startswith('Fast link dest: "'):
            return line[len('Fast link dest: "') : -1]
    return None


def mounted_listing(root: Path) -> tuple[dict[str, Record], dict[str, int]]:
    """Every path under a mounted image as a Record, and its link count."""
    stats: dict[str, os.stat_result] = {"/": root.lstat()}
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            full = Path(top) / name
            stats["/" + str(full.relative_to(root))] = full.lstat()
    first: dict[int, str] = {}
    for path, st in sorted(stats.items()):
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            first.setdefault(st.st_ino, path)
    records: dict[str, Record] = {}
    for path, st in stats.items():
        kind = _KINDS[stat.S_IFMT(st.st_mode)]
        full = root / path.lstrip("/")
        is_file = kind == "file"
        records[path] = (
            kind,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_size if is_file else 0,
            _sha256(full) if is_file else "",
            os.readlink(full) if kind == "symlink" else "",
            (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block") else (0, 0),
            first.get(st.st_ino, "") if is_file else "",
        )
    return records, {path: st.st_nlink for path, st in stats.items()}


def expected_links(entries: Sequence[FileEntry]) -> dict[str, int]:
    """i_links_count of every path: names of a file; 2 + subdirectories of a directory."""
    links: dict[str, int] = {}
    inode_of: dict[str, str] = {}  # path -> the path whose count it shares
    for entry in entries:
        path = str(entry.path)
        if entry.kind is EntryKind.HARDLINK:
            inode_of[path] = entry.target or ""
            links[inode_of[path]] += 1
            continue
        inode_of[path] = path
        links[path] = 2 if entry.kind is EntryKind.DIR else 1
        if entry.kind is EntryKind.DIR and path != "/":
            links[str(entry.path.parent)] += 1
    return {path: links[shared] for path, shared in inode_of.items()}


def without_lost_found(listing: dict[str, Record]) -> dict[str, Record]:
    return {p: r for p, r in listing.items() if p != "/lost+found"}


# ------------------------------------------------------------------ the stress image


@pytest.fixture(scope="module")
def stress(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[FileEntry], Path]:
    work = tmp_path_factory.mktemp("ext2-stress")
    entries = stress_entries(Contents(work / "content"))
    image = work / "root"
    write_ext2(entries, image, size=5 * GIB, uuid=FS_UUID, timestamp=FS_TIME)
    return entries, image


def test_stress_image_is_clean_and_sparse(stress: tuple[list[FileEntry], Path]) -> None:
    entries, image = stress
    report = e2fsck(image)
    # Inodes in use: the 11 reserved ones (root, lost+found) and one per other entry
    # but the two extra names of the hardlink set.
    assert f" {11 + len(entries) - 1 - 2}/" in report, report
    st = image.stat()
    assert st.st_size == 5 * GIB
    # The 20 MiB file, the 10,000-entry directory, bitmaps and used inode tables only.
    assert st.st_blocks * 512 < 40 * MIB, st.st_blocks * 512


def test_stress_image_read_back_by_debugfs(
    stress: tuple[list[FileEntry], Path], tmp_path: Path
) -> None:
    entries, image = stress
    listing, inodes = debugfs_listing(image, tmp_path / "dump")
    assert without_lost_found(listing) == expected_listing(entries)
    assert listing["/lost+found"][:4] == ("dir", 0o700, 0, 0)
    assert inodes["/"] == 2 and inodes["/lost+found"] == 11
    assert inodes["/bin/hl-a"] == inodes["/bin/hl-b"] == inodes["/etc/hl-c"]
    assert len(set(inodes.values())) == len(inodes) - 2
    (hardlink,) = debugfs(image, ["stat /bin/hl-a"])
    assert re.search(r"Links: 3\b", "\n".join(hardlink))


def test_stress_image_details_by_debugfs(stress: tuple[list[FileEntry], Path]) -> None:
    _entries, image = stress
    big, five, many, lost, nvme, future, past = debugfs(
        image,
        [
            "stat /bin/big",
            "stat /bin/five",
            "stat /many",
            "stat /lost+found",
            "stat /dev/nvme",
            "stat /times/after-2038",
            "stat /times/before-1970",
        ],
    )
    text = "\n".join(big)
    # 5121 data blocks: 12 direct, 1 + 1024 through the single indirect block, the
    # rest through the double indirect block and its 4 indirect blocks.
    assert "(DIND)" in text and "TOTAL: 5127" in text
    assert f"Blockcount: {5127 * 8}" in text
    assert "TOTAL: 5" in "\n".join(five) and "(IND)" not in "\n".join(five)
    assert "(IND)" in "\n".join(many)  # a directory past 12 blocks
    assert "TOTAL: 4" in "\n".join(lost)  # preallocated like mke2fs's
    assert "(New-style) Device major/minor number: 259:300" in "\n".join(nvme)
    assert "mtime: 0x80000064:00000001" in "\n".join(future)  # epoch bits past 2038
    assert "mtime: 0xfffffc18:00000000" in "\n".join(past)


def test_stress_superblock(stress: tuple[list[FileEntry], Path]) -> None:
    _entries, image = stress
    header = subprocess.run(
        ["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True
    ).stdout
    fields = dict(re.findall(r"^([^:\n]+):\s*(.*?)\s*$", header, re.M))
    assert fields["Filesystem features"] == "filetype sparse_super large_file"
    assert fields["Filesystem UUID"] == str(uuid.UUID(bytes=FS_UUID))
    assert fields["Filesystem revision #"] == "1 (dynamic)"
    assert fields["Filesystem state"] == "clean"
    assert fields["Filesystem OS type"] == "Linux"
    assert fields["Block size"] == "4096" and fields["Inode size"] == "256"
    assert fields["First inode"] == "11" and fields["Maximum mount count"] == "-1"
    assert fields["Block count"] == str(5 * GIB // 4096)
    assert int(fields["Inode count"]) == 5 * GIB // 16384  # mke2fs's default ratio
    assert fields["Last mount time"] == "n/a"
    for stamp in ("Filesystem created", "Last write time", "Last checked"):
        assert fields[stamp] == _ctime(FS_TIME), stamp


def _ctime(seconds: int) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(seconds))


def test_stress_image_mounted(stress: tuple[list[FileEntry], Path], tmp_path: Path) -> None:
    entries, image = stress
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    proc = subprocess.run(
        ["mount", "-o", "loop,ro", "-t", "ext2", str(image), str(mountpoint)],
        capture_output=True,
        text=True,
    )
    # The suite runs as root with loop devices (CI does); a failure here is real.
    assert proc.returncode == 0, proc.stderr
    try:
        listing, links = mounted_listing(mountpoint)
        times = {
            name: (mountpoint / "times" / name).lstat().st_mtime
            for name in ("before-1970", "after-2038")
        }
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
    assert without_lost_found(listing) == expected_listing(entries)
    assert listing["/lost+found"][:4] == ("dir", 0o700, 0, 0)
    want_links = expected_links(entries)
    assert {p: n for p, n in links.items() if p != "/lost+found"} == {
        **want_links,
        "/": want_links["/"] + 1,  # lost+found's ".."
    }
    assert times == {"before-1970": -1000, "after-2038": 2**31 + 100}


# ------------------------------------------------------------------ smaller images


def small_entries(contents: Contents) -> list[FileEntry]:
    return _sorted(
        [
            _entry("/", EntryKind.DIR, 0o755),
            _entry("/etc", EntryKind.DIR, 0o755),
            contents.file("/etc/hostname", 0o644, b"appliance\n"),
            contents.file("/etc/data", 0o600, os.urandom(5 * MIB + 1), uid=70000, gid=70001),
            _entry("/etc/data.link", EntryKind.HARDLINK, 0o600, target="/etc/data"),
            _entry("/etc/mtab", EntryKind.SYMLINK, 0o777, target="../proc/self/mounts"),
            _entry("/dev", EntryKind.DIR, 0o755),
            _entry("/dev/console", EntryKind.CHAR, 0o600, rdev=(5, 1)),
            _entry("/run", EntryKind.DIR, 0o755),
            _entry("/run/socket", EntryKind.SOCKET, 0o777),
        ]
    )


def test_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    entries = small_entries(Contents(tmp_path / "content"))
    first, second = tmp_path / "first", tmp_path / "second"
    # An odd size: the last group ends inside a bitmap byte.
    size = 256 * MIB + 1003 * 4096 + 5
    # The second copies file data from a helper process (copier.py): the same bytes.
    for image, helper in ((first, False), (second, True)):
        write_ext2(
            entries,
            image,
            size=size,
            uuid=FS_UUID,
            timestamp=FS_TIME,
            label="sm",
            copy_helper=helper,
        )
    assert filecmp.cmp(first, second, shallow=False)
    subprocess.run(["cmp", str(first), str(second)], check=True)
    e2fsck(first)
    assert first.stat().st_size == size
    header = subprocess.run(["dumpe2fs", "-h", str(first)], capture_output=True, text=True)
    assert re.search(r"^Filesystem volume name:\s+sm$", header.stdout, re.M)
    assert re.search(rf"^Block count:\s+{size // 4096}$", header.stdout, re.M)


def test_without_copy_file_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel refuses to copy between the two files, read and write do it."""

    def refuse(*_args: object) -> int:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    entries = small_entries(Contents(tmp_path / "content"))
    image = tmp_path / "root"
    write_ext2(entries, image, size=64 * MIB, uuid=FS_UUID, timestamp=FS_TIME)
    e2fsck(image)
    listing, _inodes = debugfs_listing(image, tmp_path / "dump")
    assert without_lost_found(listing) == expected_listing(entries)


def test_lost_found_entry_keeps_its_metadata(tmp_path: Path) -> None:
    contents = Contents(tmp_path / "content")
    entries = _sorted(
        [
            *small_entries(contents),
            _entry("/lost+found", EntryKind.DIR, 0o755, uid=5, gid=6, mtime=T0 - 5),
            contents.file("/lost+found/#12", 0o644, b"found\n"),
        ]
    )
    image = tmp_path / "root"
    write_ext2(entries, image, size=64 * MIB, uuid=FS_UUID, timestamp=FS_TIME)
    e2fsck(image)
    listing, inodes = debugfs_listing(image, tmp_path / "dump")
    assert listing == expected_listing(entries)
    assert inodes["/lost+found"] == 11


@pytest.mark.parametrize("helper", [False, True], ids=["in-process", "copy-helper"])
def test_content_spanning_block_groups(tmp_path: Path, helper: bool) -> None:
    """A tight image: files run across group metadata, inodes fill several groups."""
    contents = Contents(tmp_path / "content")
    chunk = os.urandom(3 * MIB + 5)
    entries = [_entry("/", EntryKind.DIR, 0o755), _entry("/d", EntryKind.DIR, 0o755)]
    entries += [contents.file(f"/f{i:02d}", 0o644, chunk) for i in range(60)]
    entries += [_entry(f"/d/{i:05d}", EntryKind.FIFO, 0o644) for i in range(30_000)]
    entries = _sorted(entries)
    with pytest.raises(OutputError) as too_small:
        write_ext2(entries, tmp_path / "none", size=MIB, uuid=FS_UUID, timestamp=FS_TIME)
    match = re.search(r"needs at least (\d+) MiB", str(too_small.value))
    assert match, too_small.value
    image = tmp_path / "root"
    size = int(match[1]) * MIB
    write_ext2(entries, image, size=size, uuid=FS_UUID, timestamp=FS_TIME, copy_helper=helper)
    e2fsck(image)
    # A file had to skip group 1's metadata (e2fsck's fragcheck names it)...
    report = subprocess.run(
        ["e2fsck", "-fn", "-E", "fragcheck", str(image)], capture_output=True, text=True
    )
    assert report.returncode == 0 and "expecting  32768 got phys" in report.stdout, report
    # ...and the inodes fill more than one group's table.
    groups = subprocess.run(["dumpe2fs", str(image)], capture_output=True, text=True).stdout
    per_group = int(re.search(r"Inodes per group:\s+(\d+)", groups)[1])  # type: ignore[index]
    free = [int(n) for n in re.findall(r"(\d+) free inodes", groups)]
    assert len(free) >= 2 and free[0] == 0 and free[1] < per_group, groups
    listing, _inodes = debugfs_listing(image, tmp_path / "dump")
    assert without_lost_found(listing) == expected_listing(entries)


def test_too_small_is_refused_before_writing(tmp_path: Path) -> None:
    entries = small_entries(Contents(tmp_path / "content"))
    image = tmp_path / "root"
    with pytest.raises(OutputError) as refused:
        write_ext2(entries, image, size=2 * MIB, uuid=FS_UUID, timestamp=FS_TIME)
    message = str(refused.value)
    match = re.search(r"needs at least (\d+) MiB; use --size (\d+)M", message)
    assert match and match[1] == match[2], message
    assert not image.exists()
    needed = int(match[1])
    write_ext2(entries, image, size=needed * MIB, uuid=FS_UUID, timestamp=FS_TIME)
    e2fsck(image)
    with pytest.raises(OutputError):
        write_ext2(entries, image, size=(needed - 1) * MIB, uuid=FS_UUID, timestamp=FS_TIME)


BadEntries = Callable[[Contents], list[FileEntry]]


def _with(*extra: FileEntry) -> BadEntries:
    def build(contents: Contents) -> list[FileEntry]:
        return _sorted([*small_entries(contents), *extra])

    return build


def _liar(contents: Contents) -> list[FileEntry]:
    entry = contents.file("/etc/liar", 0o644, b"twelve bytes")
    return _sorted([*small_entries(contents), _replace(entry, size=100)])


def _not_empty(contents: Contents) -> list[FileEntry]:
    entry = contents.file("/etc/liar", 0o644, b"x")
    return _sorted([*small_entries(contents), _replace(entry, size=0)])


def _shrinks(contents: Contents) -> list[FileEntry]:
    entry = contents.file("/etc/liar", 0o644, os.urandom(100_000))
    return _sorted([*small_entries(contents), _replace(entry, size=50_000)])


def _replace(entry: FileEntry, **fields: object) -> FileEntry:
    return dataclasses.replace(entry, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "path", "words"),
    [
        (_with(_entry("/" + "a" * 256, EntryKind.FIFO, 0o644)), "/" + "a" * 256, "256 bytes"),
        (_with(_entry("/etc/typed", EntryKind.FIFO, 0o10644)), "/etc/typed", "mode"),
        (_with(_entry("/etc/uid", EntryKind.FIFO, 0o644, uid=2**32)), "/etc/uid", "uid"),
        (_with(_entry("/dev/x", EntryKind.CHAR, 0o600, rdev=(4096, 0))), "/dev/x", "device"),
        (_with(_entry("/etc/l", EntryKind.SYMLINK, 0o777, target="x" * 4096)), "/etc/l", "4096"),
        (_with(_entry("/etc/l", EntryKind.SYMLINK, 0o777, target="")), "/etc/l", "target"),
        (_with(_entry("/etc/h", EntryKind.HARDLINK, 0o644, target="/nope")), "/etc/h", "/nope"),
        (_with(_entry("/nope/x", EntryKind.FIFO, 0o644)), "/nope/x", "parent"),
        (_with(_entry("/etc/t", EntryKind.FIFO, 0o644, mtime=2**40)), "/etc/t", "mtime"),
        (_with(_entry("/lost+found", EntryKind.FIFO, 0o644)), "/lost+found", "directory"),
        (_liar, "/etc/liar", "holds 12 bytes"),
        (_shrinks, "/etc/liar", "holds 100000 bytes"),
        (_not_empty, "/etc/liar", "holds 1 bytes"),
    ],
)
@pytest.mark.parametrize("helper", [False, True], ids=["in-process", "copy-helper"])
def test_unrepresentable_entries_are_refused(
    tmp_path: Path, build: BadEntries, path: str, words: str, helper: bool
) -> None:
    entries = build(Contents(tmp_path / "content"))
    image = tmp_path / "root"
    with pytest.raises(OutputError) as refused:
        write_ext2(
            entries, image, size=64 * MIB, uuid=FS_UUID, timestamp=FS_TIME, copy_helper=helper
        )
    assert path in str(refused.value) and words in str(refused.value)
    assert not image.exists()


@pytest.mark.parametrize("helper", [False, True], ids=["in-process", "copy-helper"])
def test_a_content_file_gone_is_refused(tmp_path: Path, helper: bool) -> None:
    contents = Contents(tmp_path / "content")
    entries = _sorted([*small_entries(contents), contents.file("/etc/gone", 0o644, b"soon\n")])
    gone = next(e.content for e in entries if str(e.path) == "/etc/gone")
    assert gone is not None
    gone.unlink()
    image = tmp_path / "root"
    with pytest.raises(OutputError, match=r"/etc/gone into an ext2 image: cannot read .*gone"):
        write_ext2(
            entries, image, size=64 * MIB, uuid=FS_UUID, timestamp=FS_TIME, copy_helper=helper
        )
    assert not image.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("root")]


@pytest.mark.parametrize("helper", [False, True], ids=["in-process", "copy-helper"])
def test_work_done_meanwhile(tmp_path: Path, helper: bool) -> None:
    """The caller's other work runs before the last copy is waited for; its
    failure removes the image, as a failure of the writer's own does."""
    entries = small_entries(Contents(tmp_path / "content"))
    image = tmp_path / "root"
    ran: list[bool] = []
    write_ext2(
        entries,
        image,
        size=64 * MIB,
        uuid=FS_UUID,
        timestamp=FS_TIME,
        copy_helper=helper,
        meanwhile=lambda: ran.append(image.exists()),
    )
    assert ran == [True]
    e2fsck(image)
    listing, _inodes = debugfs_listing(image, tmp_path / "dump")
    assert without_lost_found(listing) == expected_listing(entries)

    def fails() -> None:
        raise OutputError("the boot files failed")

    other = tmp_path / "other"
    with pytest.raises(OutputError, match="the boot files failed"):
        write_ext2(
            entries,
            other,
            size=64 * MIB,
            uuid=FS_UUID,
            timestamp=FS_TIME,
            copy_helper=helper,
            meanwhile=fails,
        )
    assert not other.exists()


def test_a_refused_plan_stops_the_helper(tmp_path: Path) -> None:
    """The helper starts before planning; a refusal must not leave it behind."""
    entries = small_entries(Contents(tmp_path / "content"))
    before = _children()
    with pytest.raises(OutputError, match="needs at least"):
        write_ext2(
            entries, tmp_path / "root", size=MIB, uuid=FS_UUID, timestamp=FS_TIME, copy_helper=True
        )
    assert _children() == before
    assert not (tmp_path / "root").exists()


def _children() -> set[int]:
    """This process's child processes still alive (zombies included)."""
    me = os.getpid()
    found = set()
    for task in Path(f"/proc/{me}/task").iterdir():
        children = (task / "children").read_text().split()
        found.update(int(pid) for pid in children)
    return found


# ------------------------------------------------------------------ as nobody

UNPRIVILEGED_WRITE = """
import pickle, sys
from pathlib import Path
from supermin.outputs.ext2 import write_ext2
entries = pickle.loads(Path(sys.argv[1]).read_bytes())
write_ext2(entries, Path(sys.argv[2]), size=int(sys.argv[3]), uuid=bytes(range(16)),
           timestamp=1700000000)
"""


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A scratch directory uid 65534 can use (pytest's tmp_path is 0700 root)."""
    path = make_world_dir(cache_root() / "tmp" / f"ext2-writer-{uuid.uuid4().hex[:12]}")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_unprivileged_write_keeps_owners_and_devices(world_dir: Path, tmp_path: Path) -> None:
    contents = Contents(world_dir / "content")
    entries = _sorted(
        [
            *small_entries(contents),
            _entry("/dev/sda", EntryKind.BLOCK, 0o660, gid=6, rdev=(8, 0)),
            contents.file("/usr-bin-su", 0o4755, b"setuid root\n"),
            _entry("/home", EntryKind.DIR, 0o700, uid=100000, gid=100000),
        ]
    )
    (world_dir / "entries.pickle").write_bytes(pickle.dumps(entries))
    image = world_dir / "root"
    run_unprivileged(
        [
            sys.executable,
            "-c",
            UNPRIVILEGED_WRITE,
            str(world_dir / "entries.pickle"),
            str(image),
            str(128 * MIB),
        ],
        env={**os.environ, "HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if os.geteuid() == 0:
        assert image.stat().st_uid == NOBODY  # really written by nobody
    e2fsck(image)
    listing, _inodes = debugfs_listing(image, tmp_path / "dump")
    assert without_lost_found(listing) == expected_listing(entries)


# ------------------------------------------------------------------ block maps


def contiguous(first: int = 100) -> Callable[[int], list[Run]]:
    state = [first]

    def take(count: int) -> list[Run]:
        run = Run(state[0], count)
        state[0] += count
        return [run]

    return take


def fragmented(every: int = 7) -> Callable[[int], list[Run]]:
    """Free space with a used block after every `every` free ones, like group metadata."""
    state = [1]

    def take(count: int) -> list[Run]:
        runs: list[Run] = []
        while count:
            if state[0] % (every + 1) == 0:
                state[0] += 1
            length = min(count, every + 1 - state[0] % (every + 1))
            runs.append(Run(state[0], length))
            state[0] += length
            count -= length
        return runs

    return take


def decode(blocks: BlockMap, pointers: int) -> list[int]:
    """The data blocks in file order, read back the way the kernel follows i_block."""
    contents = dict(blocks.indirect)
    slots = struct.unpack("<15I", blocks.i_block)
    found = [b for b in slots[:12] if b]

    def follow(block: int, level: int) -> None:
        for number in struct.unpack(f"<{pointers}I", contents[block]):
            if number == 0:
                return
            if level == 1:
                found.append(number)
            else:
                follow(number, level - 1)

    for level in (1, 2, 3):
        if slots[11 + level]:
            follow(slots[11 + level], level)
    return found


def _expand(runs: Sequence[Run]) -> list[int]:
    return [block for run in runs for block in range(run.start, run.start + run.count)]


@pytest.mark.parametrize(
    ("data", "indirect"),
    [
        (0, 0),
        (1, 0),
        (12, 0),
        (13, 1),  # single indirect
        (12 + 1024, 1),
        (12 + 1024 + 1, 3),  # double: DIND and its first IND
        (12 + 1024 + 20 * 1024, 1 + 1 + 20),  # the 20 MiB file of the stress image
        (12 + 1024 + 1024**2, 1 + 1 + 1024),
        (12 + 1024 + 1024**2 + 1, 1 + 1025 + 3),  # triple: TIND, DIND, IND
        (12 + 1024 + 1024**2 + 1024**2 + 1, 1 + 1025 + 1 + 2 + 1025),
        (max_data_blocks(), 1 + 1025 + 1 + 1024 + 1024**2),
    ],
)
def test_indirect_block_counts(data: int, indirect: int) -> None:
    assert indirect_blocks(data) == indirect
    # A file of 4 GiB + 1 byte needs triple indirection with 4 KiB blocks.
    if data > 12 + 1024 + 1024**2:
        assert data * 4096 > 4 * GIB


def test_too_many_blocks_for_ext2() -> None:
    with pytest.raises(ValueError):
        indirect_blocks(max_data_blocks() + 1)


@pytest.mark.parametrize("take", [contiguous, fragmented])
def test_block_maps_for_every_size_with_tiny_blocks(
    take: Callable[[], Callable[[int], list[Run]]],
) -> None:
    """With 4 pointers per block, triple indirection starts at 33 data blocks."""
    pointers = 4
    for data in range(max_data_blocks(pointers) + 1):
        blocks = map_blocks(data, take(), pointers)
        assert blocks.total == data + indirect_blocks(data, pointers)
        assert len(blocks.indirect) == blocks.total - data
        assert decode(blocks, pointers) == _expand(blocks.data)
        every = _expand(blocks.data) + [block for block, _ in blocks.indirect]
        assert len(set(every)) == blocks.total  # nothing mapped twice
        # Each indirect block comes before what it maps, in the order the kernel reads.
        for block, content in blocks.indirect:
            assert all(n > block for n in struct.unpack(f"<{pointers}I", content) if n)


def test_triple_indirect_map_at_full_size() -> None:
    data = 12 + 1024 + 1024**2 + 3 * 1024 + 5  # a little over 4 GiB
    blocks = map_blocks(data, contiguous(first=1000))
    assert blocks.total == data + indirect_blocks(data) == data + 1 + 1025 + 1 + 1 + 4
    assert blocks.total * 8 == 8 * (data + 1032)  # i_blocks in 512-byte sectors
    slots = struct.unpack("<15I", blocks.i_block)
    assert slots[:12] == tuple(range(1000, 1012))
    assert slots[12] == 1012 and slots[13] == 1012 + 1 + 1024
    mapped = decode(blocks, POINTERS)
    assert len(mapped) == data and mapped == _expand(blocks.data)
    # Contiguous free space gives a contiguous file: data and indirect blocks interleaved.
    assert sorted(mapped + [b for b, _ in blocks.indirect]) == list(
        range(1000, 1000 + blocks.total)
    )
    tind = dict(blocks.indirect)[slots[14]]
    assert struct.unpack("<2I", tind[:8])[1] == 0  # one DIND under the TIND


# ------------------------------------------------------------------ directory blocks


def test_directory_blocks_never_split_an_entry() -> None:
    entry = _entry("/d", EntryKind.DIR, 0o755)
    children = [(b"n" * (i % 256 or 1), 100 + i, 1) for i in range(3000)]
    node = Node(12, entry, 2, links=2, children=children)
    raw = pack_directory(node)
    assert len(raw) % 4096 == 0
    seen: list[bytes] = []
    for start in range(0, len(raw), 4096):
        offset = start
        while offset < start + 4096:
            inode, rec_len, name_len, _kind = struct.unpack_from("<IHBB", raw, offset)
            assert rec_len % 4 == 0 and rec_len >= 8 + name_len
            assert offset + rec_len <= start + 4096  # the last one ends the block exactly
            seen.append(raw[offset + 8 : offset + 8 + name_len])
            offset += rec_len
        assert offset == start + 4096
    assert seen == [b".", b"..", *(name for name, _, _ in children)]


# ------------------------------------------------------------------ --size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4G", 4 * GIB),
        ("512M", 512 * MIB),
        ("1.5G", 3 * GIB // 2),
        ("10737418240b", 10 * GIB),
        ("64K", 64 * 1024),
        ("2T", 2 << 40),
        (".5M", MIB // 2),
        ("1.b", 1),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("4096", "no unit"),
        ("4g", "did you mean 4G"),
        ("4GB", "unknown size unit"),
        ("G", "cannot parse"),
        ("", "cannot parse"),
        ("-1G", "cannot parse"),
        (" 4G", "cannot parse"),
        ("1.2.3G", "cannot parse"),
        ("0M", "not more than zero"),
        ("0.1b", "not more than zero"),
    ],
)
def test_parse_size_refuses(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_size(text)


# ------------------------------------------------------------------ early copies


def _early_write(
    entries: list[FileEntry], offered: Sequence[FileEntry], image: Path, size: int = 64 * MIB
) -> None:
    early = EarlyCopies.start(image, size)
    assert early is not None
    early.offer(offered)
    write_ext2(entries, image, size=size, uuid=FS_UUID, timestamp=FS_TIME, early=early)


def _first_block(image: Path, path: str) -> int:
    out = subprocess.run(
        ["debugfs", "-R", f"blocks {path}", str(image)], capture_output=True, text=True, check=True
    ).stdout
    return min(int(n) for n in out.split())


def _dumpe2fs_used_bytes(image: Path) -> int:
    header = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True)
    count = int(re.search(r"^Block count:\s+(\d+)", header.stdout, re.M)[1])  # type: ignore[index]
    free = int(re.search(r"^Free blocks:\s+(\d+)", header.stdout, re.M)[1])  # type: ignore[index]
    return (count - free) * 4096


def test_early_copies_taken_and_given_back(tmp_path: Path) -> None:
    """Files offered before the tree is known keep their copies; copies the tree
    does not take (a file left out, a size that changed) are freed and punched out."""
    contents = Contents(tmp_path / "content")
    entries = small_entries(contents)
    big = contents.file("/etc/big", 0o644, BIG)
    entries = _sorted([*entries, big])
    left_out = contents.file("/etc/left-out", 0o644, os.urandom(3 * MIB))
    resized = _replace(big, size=len(BIG) - 1)  # what an earlier walk saw
    offered = [left_out, resized, *entries]  # unclaimed ones first: holes before taken copies
    first, second = tmp_path / "first", tmp_path / "second"
    # Room for all: offering stops at a file taking more than half of what is free.
    _early_write(entries, offered, first, size=128 * MIB)
    _early_write(entries, offered, second, size=128 * MIB)
    subprocess.run(["cmp", str(first), str(second)], check=True)  # reproducible
    e2fsck(first)  # the bitmaps and free counts agree with what the inodes use
    listing, _inodes = debugfs_listing(first, tmp_path / "dump")
    assert without_lost_found(listing) == expected_listing(entries)
    # The data is where the early copies put it: before any block the writer placed.
    assert _first_block(first, "/etc/big") < _first_block(first, "/")
    # 3 MiB + 20 MiB of unclaimed copies are holes again: only used blocks take disk.
    assert first.stat().st_blocks * 512 <= _dumpe2fs_used_bytes(first)


def test_early_copy_failures(tmp_path: Path) -> None:
    """An early copy that fails makes the helper skip the later ones: those a file
    took are made by the writer itself; one the tree takes fails the build."""
    contents = Contents(tmp_path / "content")
    entries = small_entries(contents)
    vanished = contents.file("/etc/vanished", 0o644, b"gone before it was copied\n")
    assert vanished.content is not None
    vanished.content.unlink()
    image = tmp_path / "root"
    _early_write(entries, [vanished, *entries], image)  # not in the tree: no harm
    e2fsck(image)
    listing, _inodes = debugfs_listing(image, tmp_path / "dump")
    assert without_lost_found(listing) == expected_listing(entries)

    with_it = _sorted([*entries, vanished])
    other = tmp_path / "other"
    with pytest.raises(OutputError, match=r"/etc/vanished into an ext2 image: cannot read"):
        _early_write(with_it, [vanished, *entries], other)
    assert not other.exists()


def test_early_copies_thrown_away_when_the_tree_needs_otherwise(tmp_path: Path) -> None:
    """A tree with more inodes than the size's ratio gives (another geometry), or
    one with no room beside the unclaimed copies, is written again the usual way."""
    contents = Contents(tmp_path / "content")
    entries = small_entries(contents)
    fifos = [_entry(f"/run/f{i:05d}", EntryKind.FIFO, 0o644) for i in range(5000)]
    many = _sorted([*entries, *fifos])
    image = tmp_path / "many"
    _early_write(many, many, image)  # 64 MiB: 4096 inodes by the ratio
    e2fsck(image)
    listing, _inodes = debugfs_listing(image, tmp_path / "d1")
    assert without_lost_found(listing) == expected_listing(many)

    # 20 MiB of copies no file takes, and a tree of ~25 MiB in 40 MiB.
    unclaimed = [contents.file(f"/x/{i}", 0o644, os.urandom(5 * MIB)) for i in range(4)]
    bigger = _sorted([*entries, contents.file("/etc/big", 0o644, BIG)])
    image = tmp_path / "tight"
    _early_write(bigger, [*unclaimed, *bigger], image, size=40 * MIB)
    e2fsck(image)
    listing, _inodes = debugfs_listing(image, tmp_path / "d2")
    assert without_lost_found(listing) == expected_listing(bigger)


def test_early_copies_dropped_before_the_writer_takes_them(tmp_path: Path) -> None:
    """A build that fails before writing stops the helper and leaves no image."""
    contents = Contents(tmp_path / "content")
    before = _children()
    early = EarlyCopies.start(tmp_path / "root", 64 * MIB)
    assert early is not None
    early.offer(small_entries(contents))
    early.close()
    early.close()
    assert not (tmp_path / "root").exists()
    assert _children() == before


def test_early_offers_from_a_size(tmp_path: Path) -> None:
    """Offering costs the planner time per file: the build offers large files only."""
    contents = Contents(tmp_path / "content")
    entries = _sorted([*small_entries(contents), contents.file("/etc/big", 0o644, BIG)])
    image = tmp_path / "root"
    early = EarlyCopies.start(image, 128 * MIB)
    assert early is not None
    early.offer(entries, smallest=MIB)
    assert sorted(size for _path, size in early.copies) == [5 * MIB + 1, len(BIG)]
    write_ext2(entries, image, size=128 * MIB, uuid=FS_UUID, timestamp=FS_TIME, early=early)
    e2fsck(image)
    listing, _inodes = debugfs_listing(image, tmp_path / "dump")
    assert without_lost_found(listing) == expected_listing(entries)
