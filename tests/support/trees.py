"""Read back what an output holds as one comparable listing, whatever the format."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from support.product import sha256

# (type, mode, uid, gid, size, sha256, link target, rdev, hardlink group)
Record = tuple[str, int, int, int, int, str, str, tuple[int, int], str]

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def tree_listing(root: Path) -> dict[str, Record]:
    """Every path under `root` (as an absolute image path), with a hardlink group named
    by the smallest path sharing its inode."""
    paths: list[tuple[str, os.stat_result]] = [("/", root.lstat())]
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            full = Path(top) / name
            paths.append(("/" + str(full.relative_to(root)), full.lstat()))
    first_name: dict[int, str] = {}
    for path, st in sorted(paths):
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            first_name.setdefault(st.st_ino, path)
    listing: dict[str, Record] = {}
    for path, st in paths:
        kind = _TYPES[stat.S_IFMT(st.st_mode)]
        full = root / path.lstrip("/")
        is_file = kind == "file"
        is_dev = kind in ("char", "block")
        listing[path] = (
            kind,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_size if is_file else 0,
            sha256(full) if is_file else "",
            os.readlink(full) if kind == "symlink" else "",
            (os.major(st.st_rdev), os.minor(st.st_rdev)) if is_dev else (0, 0),
            first_name.get(st.st_ino, "") if is_file else "",
        )
    return listing


def extract_as_root(archive: Path, into: Path, tool: str = "bsdtar") -> dict[str, Record]:
    """Unpack a cpio or tar as root, keeping numeric owners, modes and devices."""
    into.mkdir(parents=True, exist_ok=True)
    if tool == "tar":
        cmd = ["tar", "--numeric-owner", "-xpf", str(archive), "-C", str(into)]
    else:
        cmd = ["bsdtar", "--numeric-owner", "-xpf", str(archive), "-C", str(into)]
    subprocess.run(cmd, check=True, capture_output=True)
    return tree_listing(into)


def mount_ext2(image: Path, mountpoint: Path) -> None:
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-o", "loop,ro", "-t", "ext2", str(image), str(mountpoint)],
        check=True,
        capture_output=True,
    )


def umount(mountpoint: Path) -> None:
    subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)
