"""The shape of the file system: block groups, inode tables and what they cost.

The rules follow mke2fs for a revision-1 ext2 with sparse_super and no
resize_inode: 32768 blocks per group (one bitmap block covers a group), one inode
per 16 KiB of disk unless the tree needs more, superblock and descriptor backups
in groups 0, 1 and the powers of 3, 5 and 7, and a last group too small to hold
its own metadata plus 50 blocks is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from supermin.outputs.ext2.blockmap import BLOCK_SIZE

BLOCKS_PER_GROUP = 8 * BLOCK_SIZE
INODE_SIZE = 256  # room for extra timestamp bits: dates past 2038
EXTRA_ISIZE = 32  # the large inode fields this writer fills (timestamps' extra bits)
INODES_PER_BLOCK = BLOCK_SIZE // INODE_SIZE
MAX_INODES_PER_GROUP = 8 * BLOCK_SIZE  # one inode bitmap block per group
INODE_RATIO = 16384  # bytes of disk per inode, mke2fs's default
DESCRIPTOR_SIZE = 32
MAX_BLOCKS = 2**32 - 1  # 32-bit block numbers
SMALLEST_LAST_GROUP = 50  # data blocks, as mke2fs requires
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Geometry:
    blocks: int  # blocks in the file system (the image file may be longer)
    inodes_per_group: int

    @property
    def groups(self) -> int:
        return math.ceil(self.blocks / BLOCKS_PER_GROUP)

    @property
    def inodes(self) -> int:
        return self.inodes_per_group * self.groups

    @property
    def descriptor_blocks(self) -> int:
        return math.ceil(self.groups * DESCRIPTOR_SIZE / BLOCK_SIZE)

    @property
    def inode_table_blocks(self) -> int:
        return self.inodes_per_group // INODES_PER_BLOCK

    def group_start(self, group: int) -> int:
        return group * BLOCKS_PER_GROUP

    def group_end(self, group: int) -> int:
        return min((group + 1) * BLOCKS_PER_GROUP, self.blocks)

    def superblock_blocks(self, group: int) -> int:
        """Blocks the superblock and descriptor copy take at the start of `group`."""
        return 1 + self.descriptor_blocks if has_superblock(group) else 0

    def block_bitmap(self, group: int) -> int:
        return self.group_start(group) + self.superblock_blocks(group)

    def inode_bitmap(self, group: int) -> int:
        return self.block_bitmap(group) + 1

    def inode_table(self, group: int) -> int:
        return self.block_bitmap(group) + 2

    def data_start(self, group: int) -> int:
        return self.inode_table(group) + self.inode_table_blocks

    def overhead(self, group: int) -> int:
        return self.data_start(group) - self.group_start(group)

    @property
    def data_blocks(self) -> int:
        """Blocks left for files, directories and indirect blocks."""
        return sum(self.group_end(g) - self.data_start(g) for g in range(self.groups))

    @property
    def reserved_blocks(self) -> int:
        return self.blocks * 5 // 100  # for root, as mke2fs reserves by default


def has_superblock(group: int) -> bool:
    """sparse_super: copies in groups 0 and 1 and in powers of 3, 5 and 7."""
    if group <= 1:
        return True
    for base in (3, 5, 7):
        power = group
        while power % base == 0:
            power //= base
        if power == 1:
            return True
    return False


def wanted_inodes(used: int) -> int:
    """Inodes for a tree that uses `used`, with room for files made at run time."""
    return used + used // 4 + 64


def plan_geometry(size: int, used_inodes: int) -> Geometry | None:
    """The file system mke2fs would lay out in `size` bytes, or None if none fits.

    `used_inodes` (the highest inode number the tree takes) raises the inode count
    above one per INODE_RATIO bytes when the tree has many small files.
    """
    blocks = min(size // BLOCK_SIZE, MAX_BLOCKS)
    while blocks > 0:
        groups = math.ceil(blocks / BLOCKS_PER_GROUP)
        inodes = max(blocks * BLOCK_SIZE // INODE_RATIO, wanted_inodes(used_inodes))
        per_group = _round_up(math.ceil(inodes / groups), INODES_PER_BLOCK)
        if per_group > MAX_INODES_PER_GROUP:
            if used_inodes > MAX_INODES_PER_GROUP * groups:
                return None
            per_group = MAX_INODES_PER_GROUP
        geometry = Geometry(blocks, per_group)
        last = groups - 1
        last_size = geometry.group_end(last) - geometry.group_start(last)
        if last_size >= geometry.overhead(last) + SMALLEST_LAST_GROUP:
            return geometry
        if groups == 1:
            return None
        blocks -= last_size  # drop the runt group, then lay out again
    return None


def fits(geometry: Geometry | None, used_blocks: int, used_inodes: int) -> bool:
    return (
        geometry is not None
        and geometry.data_blocks >= used_blocks
        and geometry.inodes >= used_inodes
    )


def minimum_size(used_blocks: int, used_inodes: int) -> int:
    """The smallest size in whole MiB whose file system holds the tree."""
    mib = max(1, math.ceil(used_blocks * BLOCK_SIZE / MIB))
    while mib * MIB // BLOCK_SIZE <= MAX_BLOCKS:
        geometry = plan_geometry(mib * MIB, used_inodes)
        if fits(geometry, used_blocks, used_inodes):
            return mib * MIB
        # Metadata grows with the size, so step by the shortfall, at least 1 MiB.
        short = used_blocks - (geometry.data_blocks if geometry else 0)
        mib += max(1, math.ceil(short * BLOCK_SIZE / MIB))
    return mib * MIB  # more than ext2 with 4 KiB blocks can address


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
