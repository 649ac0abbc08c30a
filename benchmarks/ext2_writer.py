"""The ext2 writer next to mke2fs -d and genext2fs, on the same trees, in the same run.

    $VENV/bin/python benchmarks/ext2_writer.py [--runs N] [--size 4G] [--copies 10] [--tree DIR]

The tree is the real Debian closure of `bash coreutils hello`, unpacked with
`dpkg-deb -x` (or --tree DIR), and the same tree copied --copies times side by
side for a larger workload. supermin's writer gets the entries a walk with lstat
gives (the walk itself is timed apart); the peers get the directory:

    mke2fs -q -F -t ext2 -b 4096 -d TREE IMAGE SIZE
    genext2fs -B 4096 -b BLOCKS -d TREE IMAGE

Each image is deleted before each run (outside the timing), every tool runs on a
warm page cache, and every image must pass e2fsck -fn. Prints a Markdown table
of medians. No thresholds: the numbers go into notes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.debdata import real_pool  # noqa: E402
from timing import timed  # noqa: E402

from supermin.entry import EntryKind, FileEntry, kind_from_st_mode  # noqa: E402
from supermin.outputs.ext2 import parse_size, write_ext2  # noqa: E402

ROOTS = ["bash", "coreutils", "hello"]
TIMESTAMP = 1_700_000_000
UUID = bytes(range(16))


def unpack_pool(into: Path) -> Path:
    tree = into / "tree"
    tree.mkdir()
    for deb in sorted(real_pool(ROOTS).glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    return tree


def replicate(tree: Path, copies: int, into: Path) -> Path:
    big = into / f"tree-x{copies}"
    big.mkdir()
    for number in range(copies):
        shutil.copytree(tree, big / f"copy{number}", symlinks=True)
    return big


def walk_entries(top: Path) -> list[FileEntry]:
    """The tree as the merge step would hand it over: sorted, hardlinks as HARDLINK."""
    paths = [PurePosixPath("/")]
    for directory, dirs, files in os.walk(top):
        base = PurePosixPath("/") / Path(directory).relative_to(top)
        paths += [base / name for name in [*dirs, *files]]
    paths.sort(key=lambda p: p.parts)
    first_name: dict[tuple[int, int], str] = {}
    entries = []
    for path in paths:
        full = top / str(path).lstrip("/")
        st = full.lstat()
        kind = kind_from_st_mode(st.st_mode)
        common = {
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime": int(st.st_mtime),
        }
        if kind is EntryKind.FILE and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in first_name:
                entries.append(
                    FileEntry(path, EntryKind.HARDLINK, target=first_name[key], **common)  # type: ignore[arg-type]
                )
                continue
            first_name[key] = str(path)
        extra: dict[str, object] = {}
        if kind is EntryKind.FILE:
            extra = {"size": st.st_size, "content": full}
        elif kind is EntryKind.SYMLINK:
            extra = {"target": os.readlink(full)}
        elif kind in (EntryKind.CHAR, EntryKind.BLOCK):
            extra = {"rdev": (os.major(st.st_rdev), os.minor(st.st_rdev))}
        entries.append(FileEntry(path, kind, **common, **extra))  # type: ignore[arg-type]
    return entries


def check(image: Path) -> float:
    """MiB the image really occupies, after e2fsck has found it clean."""
    subprocess.run(["e2fsck", "-fn", str(image)], check=True, capture_output=True)
    return image.stat().st_blocks * 512 / (1 << 20)


def measure(tree: Path, size: int, runs: int, work: Path) -> list[tuple[str, float, float]]:
    image = work / "image"

    def fresh() -> None:
        image.unlink(missing_ok=True)

    start = time.perf_counter()
    entries = walk_entries(tree)
    walk = time.perf_counter() - start
    mke2fs = ["mke2fs", "-q", "-F", "-t", "ext2", "-b", "4096", "-d", str(tree), str(image)]
    genext2fs = ["genext2fs", "-B", "4096", "-b", str(size // 4096), "-d", str(tree), str(image)]
    tools: list[tuple[str, Callable[[], object]]] = [
        (
            f"supermin write_ext2 ({len(entries)} entries; the lstat walk took {walk:.2f} s)",
            lambda: write_ext2(entries, image, size=size, uuid=UUID, timestamp=TIMESTAMP),
        ),
        ("mke2fs -t ext2 -b 4096 -d (peer)", lambda: _run([*mke2fs, f"{size // 1024}k"])),
        ("genext2fs -B 4096 -d (peer)", lambda: _run(genext2fs)),
    ]
    rows = []
    for label, action in tools:
        seconds = timed(action, runs, fresh)
        rows.append((label, seconds, check(image)))
    return rows


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", default="4G", help="image size, supermin's --size syntax")
    parser.add_argument("--copies", type=int, default=10, help="the larger tree: N copies")
    parser.add_argument("--tree", type=Path, help="a directory tree instead of the Debian pool")
    options = parser.parse_args()
    size = parse_size(options.size)
    work = Path(tempfile.mkdtemp(prefix="supermin-ext2-bench-", dir="/var/tmp"))
    try:
        tree = options.tree.resolve() if options.tree else unpack_pool(work)
        workloads = [("tree", tree)]
        if options.copies > 1:
            workloads.append((f"tree x{options.copies}", replicate(tree, options.copies, work)))
        print(
            f"| workload | writer (median of {options.runs}, {options.size}) | seconds | "
            "vs supermin | image uses MiB |"
        )
        print("| --- | --- | ---: | ---: | ---: |")
        for name, top in workloads:
            rows = measure(top, size, options.runs, work)
            ours = rows[0][1]
            for label, seconds, used in rows:
                print(f"| {name} | {label} | {seconds:.3f} | {seconds / ours:.2f}x | {used:.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
