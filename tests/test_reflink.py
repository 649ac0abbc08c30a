"""On a file system that shares blocks (btrfs here), copies are reflinks, not copies.

The build runs as uid 65534 without network, in a private mount namespace
where a scratch btrfs is mounted (nothing on the host changes). Output,
stage and extraction cache all live on it; `filefrag -v` then shows which
extents of an output file are shared with the cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from support.debdata import real_pool
from support.privileges import unprivileged_offline
from support.product import SUPERMIN, scratch_dir

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a scratch btrfs on a loop device needs root"
)

ROOTS = ["bash", "coreutils"]
BIG = 64 * 1024  # the files checked: every regular file at least this big
_FILE = re.compile(r"^File size of (\S+) is (\d+) ")
_EXTENT = re.compile(r"^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+\d+\.\.\s*\d+:\s+\d+:\s*(\S*)\s*$")


def _script(mount: Path, pool: Path) -> str:
    cache, work = mount / "cache", mount / "work"

    def nobody(*args: str) -> str:
        env = f"env HOME=/nonexistent SUPERMIN_CACHE_DIR={cache}"
        return f"{env} {shlex.join(unprivileged_offline([SUPERMIN, *args]))}"

    build = ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot", "-o"]
    report = []
    for run in ("cold", "warm"):
        report.append(f"echo '== {run}'")
        report.append(f"find {work}/{run} -type f -size +{BIG}c -exec filefrag -v {{}} +")
    return "\n".join(
        [
            "set -eu",
            f"mount -o loop {mount}.img {mount}",
            f"mkdir {cache} {work} && chmod 0777 {cache} {work}",
            nobody("prepare", *ROOTS, "--repo", str(pool), "-o", str(work / "d")),
            nobody(*build, str(work / "cold")),  # fills the cache
            nobody(*build, str(work / "warm"), "-v"),
            *report,
            "echo '== sums'",
            f"find {work}/warm -type f -size +{BIG}c -exec sha256sum {{}} +",
            f"umount {mount}",
        ]
    )


def _shared_blocks(report: str) -> dict[str, tuple[int, int]]:
    """Each file filefrag reports on: (its size, how many of its blocks are shared)."""
    files: dict[str, tuple[int, int]] = {}
    name = ""
    for line in report.splitlines():
        if match := _FILE.match(line):
            name = match[1]
            files[name] = (int(match[2]), 0)
        elif (match := _EXTENT.match(line)) and "shared" in match[3]:
            size, shared = files[name]
            files[name] = (size, shared + int(match[2]) - int(match[1]) + 1)
    return files


def test_outputs_share_blocks_with_the_cache_on_btrfs() -> None:
    pool = real_pool(ROOTS)
    mount = scratch_dir("reflink") / "btrfs"  # a path uid 65534 can reach
    mount.mkdir()
    subprocess.run(["truncate", "-s", "1G", f"{mount}.img"], check=True)
    subprocess.run(["mkfs.btrfs", "-q", f"{mount}.img"], check=True, capture_output=True)
    ran = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _script(mount, pool)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    assert re.search(r"extraction cache \S+: 14 hits, 0 misses", ran.stderr), ran.stderr
    for run in ("cold", "warm"):
        report = _section(ran.stdout, run)
        files = _shared_blocks(report)
        assert len(files) > 20, report  # bash, coreutils' programs, libc...
        for name, (size, shared) in files.items():
            # Every whole block shared; only a partial last block is copied.
            assert shared >= size // 4096, (run, name, size, shared, report)
    # The bytes are right: the warm tree's files equal what dpkg-deb unpacks.
    unpacked = scratch_dir("reflink-dpkg")
    for deb in pool.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    sums = [line.split(maxsplit=1) for line in _section(ran.stdout, "sums").splitlines()]
    assert len(sums) == len(files)
    for checksum, name in sums:
        relative = name.split("/work/warm/", 1)[1]
        assert checksum == hashlib.sha256((unpacked / relative).read_bytes()).hexdigest(), name


def _section(output: str, title: str) -> str:
    return output.split(f"== {title}\n", 1)[1].split("== ", 1)[0]
