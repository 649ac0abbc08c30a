"""Where an inode's blocks go: 12 direct pointers, then single, double, triple indirect.

Blocks are taken from an allocator in the order the kernel reads them: each
indirect block comes just before the blocks it points at (IND, its data; DIND,
IND, data, IND, data...), so a file laid out contiguously is read front to back.

The number of pointers an indirect block holds is a parameter so that tests can
reach triple indirection with a handful of blocks; the writer uses 1024 (4 KiB
blocks of 32-bit block numbers).
"""

from __future__ import annotations

import functools
import math
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass

BLOCK_SIZE = 4096
POINTERS = BLOCK_SIZE // 4
DIRECT = 12
SLOTS = 15  # i_block: 12 direct, then the single, double and triple indirect block


@dataclass(frozen=True, slots=True)
class Run:
    """`count` consecutive blocks starting at block `start`."""

    start: int
    count: int


# The allocator: `count` more blocks, as runs in ascending order.
Take = Callable[[int], list[Run]]


@dataclass(frozen=True, slots=True)
class BlockMap:
    i_block: bytes  # the inode's 15 pointers, little-endian
    total: int  # data plus indirect blocks: what i_blocks counts
    data: list[Run]  # the data blocks, in file order
    indirect: list[tuple[int, bytes]]  # (block, contents) of each indirect block


@functools.cache
def max_data_blocks(pointers: int = POINTERS) -> int:
    return DIRECT + pointers + pointers**2 + pointers**3


def indirect_blocks(data_blocks: int, pointers: int = POINTERS) -> int:
    """How many indirect blocks a file of `data_blocks` data blocks needs."""
    if data_blocks <= DIRECT:  # nearly every file: asked for twice per inode
        return 0
    if data_blocks > max_data_blocks(pointers):
        raise ValueError(f"{data_blocks} blocks are more than ext2 can map")
    rest = data_blocks - DIRECT
    count = 0
    for level in (1, 2, 3):
        covered = min(rest, pointers**level)
        # One block per `pointers**depth` data blocks at each depth below the top.
        count += sum(math.ceil(covered / pointers**depth) for depth in range(1, level + 1))
        rest -= covered
    return count


def map_blocks(
    data_blocks: int, take: Take, pointers: int = POINTERS, take_indirect: Take | None = None
) -> BlockMap:
    """Allocate `data_blocks` data blocks and the indirect blocks that map them.

    With `take_indirect`, the indirect blocks come from it, the data from `take`
    (a file whose data is already in place).
    """
    if data_blocks <= DIRECT:  # no indirect block: most files, and every directory here
        runs = take(data_blocks) if data_blocks else []
        numbers = array("I")
        for run in runs:
            numbers.extend(range(run.start, run.start + run.count))
        return BlockMap(_little_endian(numbers, SLOTS), data_blocks, runs, [])
    if data_blocks > max_data_blocks(pointers):
        raise ValueError(f"{data_blocks} blocks are more than ext2 can map")
    mapper = _Mapper(take, pointers, take_indirect or take)
    slots = array("I", bytes(4 * SLOTS))
    direct = min(data_blocks, DIRECT)
    slots[:direct] = mapper.data(direct)
    rest = data_blocks - direct
    for level in (1, 2, 3):
        if rest == 0:
            break
        covered = min(rest, pointers**level)
        slots[DIRECT + level - 1] = mapper.tree(level, covered)
        rest -= covered
    return BlockMap(
        _little_endian(slots, SLOTS),
        data_blocks + len(mapper.indirect),
        mapper.runs,
        mapper.indirect,
    )


class _Mapper:
    def __init__(self, take: Take, pointers: int, take_indirect: Take) -> None:
        self.take = take
        self.take_indirect = take_indirect
        self.pointers = pointers
        self.runs: list[Run] = []
        self.indirect: list[tuple[int, bytes]] = []

    def data(self, count: int) -> array[int]:
        numbers = array("I")
        if count == 0:
            return numbers
        for run in self.take(count):
            self.runs.append(run)
            numbers.extend(range(run.start, run.start + run.count))
        return numbers

    def tree(self, level: int, count: int) -> int:
        """An indirect block of `level` (1 = single) mapping the next `count` data blocks."""
        block = self.take_indirect(1)[0].start
        slot = len(self.indirect)
        self.indirect.append((block, b""))  # keeps the list in allocation order
        if level == 1:
            numbers = self.data(count)
        else:
            span = self.pointers ** (level - 1)
            numbers = array(
                "I",
                [self.tree(level - 1, min(span, count - done)) for done in range(0, count, span)],
            )
        self.indirect[slot] = (block, _little_endian(numbers, self.pointers))
        return block


def _little_endian(numbers: array[int], slots: int) -> bytes:
    """32-bit little-endian block numbers, zero-padded to `slots` of them."""
    if numbers.itemsize != 4:  # pragma: no cover - C unsigned int is 32 bits on Linux
        raise RuntimeError("array('I') is not 32 bits wide here")
    if sys.byteorder == "big":  # pragma: no cover - ext2 is little-endian everywhere
        numbers = array("I", numbers)
        numbers.byteswap()
    raw = numbers.tobytes()
    return raw + bytes(4 * slots - len(raw))
