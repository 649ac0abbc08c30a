"""On a file system that shares blocks (btrfs here), copies are reflinks, not copies.

The build runs as uid 65534 without network, in a private mount namespace
where a scratch btrfs is mounted (nothing on the host changes). Output,
stage and extraction cache all live on it, the cache either beside the
output or in a subvolume of its own, as on Fedora, whose / and /home are
subvolumes of one btrfs: link(2) is refused between them. After a sync,
`filefrag -v` gives the physical blocks of every big output file and of the
cache's files: a shared block is one that lies inside the cache's (a copy is
given new ones).
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
# " ext: logical_start.. logical_end: physical_start.. physical_end: length: [expected:] flags"
_EXTENT = re.compile(r"^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):")


def _script(mount: Path, pool: Path, cache_subvolume: bool) -> str:
    cache, work = mount / "cache", mount / "work"
    make_cache = f"btrfs -q subvolume create {cache}" if cache_subvolume else f"mkdir {cache}"

    def nobody(*args: str) -> str:
        env = f"env HOME=/nonexistent SUPERMIN_CACHE_DIR={cache}"
        return f"{env} {shlex.join(unprivileged_offline([SUPERMIN, *args]))}"

    build = ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot", "-o"]
    report = [
        f"sync -f {mount}",
        "echo '== cache'",
        f"find {cache} -type f -exec filefrag -v {{}} +",
    ]
    for run in ("cold", "warm"):
        report.append(f"echo '== {run}'")
        report.append(f"find {work}/{run} -type f -size +{BIG}c -exec filefrag -v {{}} +")
    return "\n".join(
        [
            "set -eu",
            f"mount -o loop {mount}.img {mount}",
            make_cache,
            f"mkdir {work} && chmod 0777 {cache} {work}",
            nobody("prepare", *ROOTS, "--repo", str(pool), "-o", str(work / "d")),
            nobody(*build, str(work / "cold")),  # fills the cache
            nobody(*build, str(work / "warm"), "-v"),
            *report,
            "echo '== sums'",
            f"find {work}/warm -type f -size +{BIG}c -exec sha256sum {{}} +",
            f"umount {mount}",
        ]
    )


def _physical(report: str) -> dict[str, tuple[int, set[int]]]:
    """Each file filefrag reports on: (its size, the physical blocks holding it)."""
    files: dict[str, tuple[int, set[int]]] = {}
    name = ""
    for line in report.splitlines():
        if match := _FILE.match(line):
            name = match[1]
            files[name] = (int(match[2]), set())
        elif match := _EXTENT.match(line):
            files[name][1].update(range(int(match[1]), int(match[2]) + 1))
    return files


@pytest.mark.parametrize("cache_subvolume", [False, True], ids=["same-subvolume", "own-subvolume"])
def test_outputs_share_blocks_with_the_cache_on_btrfs(cache_subvolume: bool) -> None:
    pool = real_pool(ROOTS)
    mount = scratch_dir("reflink") / "btrfs"  # a path uid 65534 can reach
    mount.mkdir()
    subprocess.run(["truncate", "-s", "1G", f"{mount}.img"], check=True)
    subprocess.run(["mkfs.btrfs", "-q", f"{mount}.img"], check=True, capture_output=True)
    ran = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        + [_script(mount, pool, cache_subvolume)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    assert re.search(r"extraction cache \S+: 14 hits, 0 misses", ran.stderr), ran.stderr
    cached = set().union(
        *(blocks for _, blocks in _physical(_section(ran.stdout, "cache")).values())
    )
    assert cached
    for run in ("cold", "warm"):
        files = _physical(_section(ran.stdout, run))
        assert len(files) > 20, files.keys()  # bash, coreutils' programs, libc...
        for name, (size, blocks) in files.items():
            # Every whole block is one of the cache's; only a partial last block is copied.
            shared = len(blocks & cached)
            assert shared >= size // 4096, (run, name, size, shared, len(blocks))
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
