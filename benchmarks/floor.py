"""The least time our cold build from the pool could take on this machine, measured.

Row 6 (a cold build from a pool of .debs against a `dpkg-deb -x` loop) is bound
by two costs that belong to the machine, not to either program: decompressing
every data.tar member, and writing the tree's bytes into new page-cache pages.
On this VM the second one changes tenfold from one minute to the next (a new
256 MiB file was written at 300 MB/s and, minutes later, at 5 GB/s), so a
ratio means little without the floor measured beside it. The cause is the
guest's memory policy, which sysfs shows: a DAMON scheme pages out page cache
left untouched for a minute, up to 128 MiB a second
(/sys/kernel/mm/damon/admin), and the virtio balloon reports free 2 MiB
blocks to the host (/sys/module/page_reporting), which takes them back. The
first write to such a page then costs a fault in the host; a page freed
moments ago is still backed. Touching 12 GB of memory and freeing it took the
rate from 340 MB/s to 5 GB/s at once; within a minute it was back at
340 MB/s. The note gives the floor at both rates.

Ours, building cold, writes the bytes twice (the extraction cache's copy, then
the tree; on ext4 there are no reflinks); the peer writes them once, from a
tar process that runs beside its decompressor. The floor divides the sum of
that CPU work by the cores: it leaves out every other cost of ours, so it is a
bound, never a prediction.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import libarchive
import libarchive.ffi as ffi

from supermin.tarstream import member_data  # declares ffi.read_data_into_fd too

PROBE_BYTES = 256 << 20
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Floor:
    decode_cpu: float  # CPU seconds to decompress every data.tar member
    page_cache_rates: tuple[float, ...]  # bytes per second into new page-cache pages
    tree_bytes: int  # the regular files' bytes, each inode once
    cores: int

    @property
    def fastest_rate(self) -> float:
        """The bound takes the fastest rate measured: it must hold whichever the runs met."""
        return max(self.page_cache_rates)

    @property
    def slowest_rate(self) -> float:
        return min(self.page_cache_rates)

    def seconds(self, copies: int, rate: float | None = None) -> float:
        """No build writing the tree's bytes `copies` times can be faster than this,
        where new page-cache pages are written at `rate` (default: the fastest measured)."""
        rate = rate or self.fastest_rate
        return (self.decode_cpu + copies * self.tree_bytes / rate) / self.cores

    def to_json(self) -> dict[str, float]:
        return {
            "decode_cpu_s": self.decode_cpu,
            **{
                f"page_cache_MB_per_s_{when}": rate / 1e6
                for when, rate in zip(("before", "after"), self.page_cache_rates, strict=False)
            },
            "tree_MB": self.tree_bytes / 1e6,
            "cores": self.cores,
            "floor_two_copies_s": self.seconds(2),
            "floor_one_copy_s": self.seconds(1),
            "floor_two_copies_at_slowest_rate_s": self.seconds(2, self.slowest_rate),
        }


def data_members(debs: Sequence[Path]) -> list[bytes]:
    """Each .deb's compressed data.tar member, read out of its ar archive."""
    members = []
    for deb in debs:
        with libarchive.file_reader(str(deb), format_name="ar") as outer:
            for member in outer:
                if member.pathname.startswith("data.tar"):
                    members.append(b"".join(member_data(outer, member.size)))
                    break
            else:
                raise ValueError(f"{deb}: no data.tar member")
    return members


def _decode(blob: bytes, sink: int) -> None:
    with libarchive.memory_reader(blob) as archive:
        for member in archive:
            if member.isfile:
                ffi.read_data_into_fd(archive._pointer, sink)


def decode_cpu_seconds(members: Sequence[bytes], jobs: int) -> float:
    """CPU seconds libarchive (the library ours uses; the same liblzma as dpkg) takes
    to decompress `members` into /dev/null, on `jobs` threads, biggest first."""
    sink = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        start = time.process_time()
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(lambda blob: _decode(blob, sink), sorted(members, key=len, reverse=True)))
        return time.process_time() - start
    finally:
        os.close(sink)


def page_cache_rate(path: Path, size: int = PROBE_BYTES) -> float:
    """Bytes per second written into the new file `path` (`size` bytes, no sync).

    The caller removes it once the runs are over: pages freed now would be
    handed to the next run, which would then find them faster than the others.
    """
    block = b"\xa5" * _BLOCK
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        start = time.perf_counter()
        for _ in range(size // _BLOCK):
            os.write(fd, block)
        took = time.perf_counter() - start
    finally:
        os.close(fd)
    return size // _BLOCK * _BLOCK / took


def tree_bytes(tree: Path) -> int:
    """The sizes of the regular files under `tree`, a hardlinked inode counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, _, names in os.walk(tree):
        for name in names:
            info = os.lstat(os.path.join(top, name))
            if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def measure(debs: Sequence[Path], tree: Path, page_cache_rates: Sequence[float]) -> Floor:
    cores = os.cpu_count() or 1
    return Floor(
        decode_cpu=decode_cpu_seconds(data_members(debs), cores),
        page_cache_rates=tuple(page_cache_rates),
        tree_bytes=tree_bytes(tree),
        cores=cores,
    )


def note(floor: Floor, packages: int, peer_median: float) -> str:
    """The floor as a sentence of the row's notes."""
    two = floor.seconds(2)
    slow = floor.seconds(2, floor.slowest_rate)
    rates = " and ".join(f"{rate / 1e6:.0f}" for rate in floor.page_cache_rates)
    return (
        f"Floor: libarchive decompresses the {packages} data.tar members in "
        f"{floor.decode_cpu:.2f} CPU-s; a new {PROBE_BYTES >> 20} MiB file went into the "
        f"page cache at {rates} MB/s (before and after the runs); the tree holds "
        f"{floor.tree_bytes / 1e6:.0f} MB. Ours writes those bytes twice (the extraction "
        f"cache's copy, then the tree), the peer once, from a tar process beside its "
        f"decompressor. At the faster rate, ours cannot take less than "
        f"({floor.decode_cpu:.2f} + 2 × {floor.tree_bytes / floor.fastest_rate:.2f})"
        f" / {floor.cores} cores = {two:.2f} s, {two / peer_median:.2f}× the peer's median "
        f"(benchmarks/floor.py); at the slower rate, {slow:.2f} s, {slow / peer_median:.2f}×."
    )
