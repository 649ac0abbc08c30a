"""Write the planned tree into a sparse image file: data first, then the metadata.

Blocks are handed out front to back in inode order, so each file is contiguous
except where it crosses a group's metadata; files copied early (early.py) keep
the blocks they were given before, at the front. Only blocks that hold something are
written; the rest of the image stays a hole. File contents go straight from their
content file into their blocks, in the kernel (copy_file_range) when it can.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from supermin.content import Content
from supermin.entry import EntryKind, FileEntry
from supermin.errors import OutputError
from supermin.outputs.ext2.blockmap import BLOCK_SIZE, BlockMap, Run, Take, map_blocks
from supermin.outputs.ext2.copier import (
    COPYING,
    EARLY,
    OPENING,
    Copier,
    CopyFailure,
    copy_range,
)
from supermin.outputs.ext2.layout import (
    BLOCKS_PER_GROUP,
    DESCRIPTOR_SIZE,
    INODE_SIZE,
    Geometry,
    has_superblock,
)
from supermin.outputs.ext2.records import (
    SUPERBLOCK_OFFSET,
    device_i_block,
    pack_descriptor,
    pack_inode,
    pack_superblock,
)
from supermin.outputs.ext2.tree import Node, Tree, refuse
from supermin.outputs.ext2.xattrs import XATTR_OFFSET

if TYPE_CHECKING:
    from supermin.outputs.ext2.early import EarlyCopy

_FLUSH_AT = 8 << 20  # bytes of consecutive blocks gathered into one pwrite
_NO_I_BLOCK = bytes(60)


class Allocator:
    """Hands out free blocks in order, skipping each group's metadata."""

    def __init__(self, geometry: Geometry) -> None:
        self.geometry = geometry
        self.group = 0
        self.next = geometry.data_start(0)
        self.used = [0] * geometry.groups  # data blocks taken in each group

    def take(self, count: int) -> list[Run]:
        runs: list[Run] = []
        while count:
            end = self.geometry.group_end(self.group)
            if self.next == end:
                self.group += 1
                if self.group == self.geometry.groups:
                    # The space was checked before anything was written.
                    raise RuntimeError("ext2 writer: out of blocks after the space check")
                self.next = self.geometry.data_start(self.group)
                continue
            length = min(count, end - self.next)
            runs.append(Run(self.next, length))
            self.next += length
            self.used[self.group] += length
            count -= length
        return runs


class Sink:
    """Gathers writes to consecutive blocks into one pwrite."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.start = 0
        self.buffer = bytearray()

    def put(self, block: int, data: bytes | memoryview) -> None:
        end = self.start + -(-len(self.buffer) // BLOCK_SIZE)
        if self.buffer and (block != end or len(self.buffer) >= _FLUSH_AT):
            self.flush()
        if self.buffer:
            self.buffer += bytes(-len(self.buffer) % BLOCK_SIZE)
        else:
            self.start = block
        self.buffer += data

    def flush(self) -> None:
        if self.buffer:
            pwrite_all(self.fd, self.buffer, self.start * BLOCK_SIZE)
            self.buffer = bytearray()


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class ImageWriter:
    def __init__(
        self,
        fd: int,
        geometry: Geometry,
        tree: Tree,
        copier: Copier | None = None,
        *,
        allocator: Allocator | None = None,
        claimed: dict[int, EarlyCopy] | None = None,
        freed: Sequence[Run] = (),
    ) -> None:
        """`allocator`, `claimed` and `freed` come with early copies (early.py): the
        allocator that placed them, the copy each file takes (by inode number), and
        the blocks of the copies no file takes."""
        self.fd = fd
        self.geometry = geometry
        self.tree = tree
        self.allocator = allocator or Allocator(geometry)
        self.claimed = claimed or {}
        self.freed = freed
        self.sink = Sink(fd)
        self.inodes = bytearray(tree.used_inodes * INODE_SIZE)  # inode n at (n - 1) * size
        # With a copier, file data is copied by its helper process while this
        # one goes on placing inodes; the files queued, by record number.
        self.copier = copier
        self.queued: list[FileEntry] = []

    def write(self, *, uuid: bytes, label: bytes, timestamp: int) -> None:
        """Place every inode and write the metadata; a copier may still be copying."""
        for node in self.tree.nodes:
            self.place(node)
        self.sink.flush()
        self.write_metadata(uuid=uuid, label=label, timestamp=timestamp)

    def finish(self) -> None:
        """Wait for the copier's last copy; its first failure, as the writer's own.

        The early copies the helper skipped after one failed are done here, for
        the files that took them.
        """
        if self.copier is None:
            return
        self._finish_copies()
        _punch_holes(self.fd, self.freed)

    def _finish_copies(self) -> None:
        assert self.copier is not None
        skipped_from = None
        for failure in self.copier.finish():
            if not failure.number & EARLY:
                raise self._copy_failure(failure)
            skipped_from = failure.number & ~EARLY
        if skipped_from is None:
            return
        redo = sorted(
            (copy.number, number)
            for number, copy in self.claimed.items()
            if copy.number >= skipped_from
        )
        nodes = {node.number: node for node in self.tree.nodes if node.number in self.claimed}
        for _, number in redo:
            self.copy_content(nodes[number].entry, self.claimed[number].runs, in_process=True)

    def place(self, node: Node) -> None:
        """Allocate and write the node's blocks, then fill in its inode."""
        entry = node.entry
        early = self.claimed.get(node.number) if self.claimed else None
        if early is not None:  # its data is in place: only the indirect blocks are new
            blocks = map_blocks(
                node.data_blocks, _taking(early.runs), take_indirect=self.allocator.take
            )
        elif node.data_blocks:
            blocks = map_blocks(node.data_blocks, self.allocator.take)
        else:
            blocks = None
        if entry.kind is EntryKind.FILE and early is None:
            # Even an empty file's content is opened: it must really be empty.
            self.copy_content(entry, blocks.data if blocks else [])
        if blocks is not None:
            pieces = _pieces(blocks, node.content if entry.kind is not EntryKind.FILE else b"")
            for block, data in pieces:
                self.sink.put(block, data)
        offset = (node.number - 1) * INODE_SIZE
        pack_inode(
            self.inodes,
            offset,
            mode=entry.st_mode,
            uid=entry.uid,
            gid=entry.gid,
            size=entry.size if entry.kind is EntryKind.FILE else len(node.content),
            mtime=entry.mtime,
            links=node.links,
            blocks=blocks.total if blocks else 0,
            i_block=_i_block(node, blocks),
        )
        if node.xattrs:
            start = offset + XATTR_OFFSET
            self.inodes[start : start + len(node.xattrs)] = node.xattrs

    def copy_content(self, entry: FileEntry, runs: Sequence[Run], in_process: bool = False) -> None:
        content = Content.of(entry)
        if content is None:
            return  # an empty file: the planner refused content-less data
        if self.copier is not None and not in_process:
            self._queue(entry, content, runs)
            return
        try:
            source, actual = content.open()
        except OSError as err:
            raise refuse(
                entry,
                f"cannot read {content}: {err.strerror}",
                "its content file is unreadable or was removed while supermin ran",
            ) from err
        try:
            if actual == entry.size:
                actual = self._copy(source, content.start, entry.size, runs)
        except OSError as err:
            raise refuse(entry, f"copying {content}: {err.strerror}", _hint(err)) from err
        finally:
            os.close(source)
        if actual != entry.size:
            raise refuse(
                entry,
                f"{content} holds {actual} bytes, the entry says {entry.size}",
                "a content file changed while supermin ran; build again",
            )

    def _copy(self, source: int, start: int, size: int, runs: Sequence[Run]) -> int:
        """Copy `size` bytes of `source` from `start` into `runs`; return how many there were."""
        copied = 0
        for run in runs:
            length = min(run.count * BLOCK_SIZE, size - copied)
            done = copy_range(source, self.fd, start + copied, run.start * BLOCK_SIZE, length)
            copied += done
            if done < length:
                break
        return copied

    def _queue(self, entry: FileEntry, content: Content, runs: Sequence[Run]) -> None:
        copier = self.copier
        assert copier is not None
        number = len(self.queued)
        self.queued.append(entry)
        source = os.fsencode(content.path)
        # A whole file is checked against the entry's size first, as in _copy.
        check = entry.size if content.offset is None else -1
        queue_copy(copier, number, source, check, content.start, entry.size, runs)

    def _copy_failure(self, failure: CopyFailure) -> OutputError:
        entry = self.queued[failure.number]
        content = Content.of(entry)
        assert content is not None
        if failure.stage == OPENING:
            return refuse(
                entry,
                f"cannot read {content}: {os.strerror(failure.errno)}",
                "its content file is unreadable or was removed while supermin ran",
            )
        if failure.stage == COPYING:
            err = OSError(failure.errno, os.strerror(failure.errno))
            return refuse(entry, f"copying {content}: {err.strerror}", _hint(err))
        return refuse(
            entry,
            f"{content} holds {failure.held - content.start} bytes, the entry says {entry.size}",
            "a content file changed while supermin ran; build again",
        )

    def write_metadata(self, *, uuid: bytes, label: bytes, timestamp: int) -> None:
        """Superblocks, descriptors, bitmaps and used inode tables, one pwrite per group."""
        geometry = self.geometry
        per_group = geometry.inodes_per_group
        used_inodes = [
            min(max(self.tree.used_inodes - g * per_group, 0), per_group)
            for g in range(geometry.groups)
        ]
        directories = [0] * geometry.groups
        for node in self.tree.nodes:
            if node.children is not None:
                directories[(node.number - 1) // per_group] += 1
        freed: dict[int, list[Run]] = {}  # early copies no file took, by group
        for run in self.freed:
            freed.setdefault(run.start // BLOCKS_PER_GROUP, []).append(run)
        free_blocks = [
            geometry.group_end(g)
            - geometry.data_start(g)
            - self.allocator.used[g]
            + sum(run.count for run in freed.get(g, ()))
            for g in range(geometry.groups)
        ]
        descriptors = bytearray(geometry.descriptor_blocks * BLOCK_SIZE)
        for group in range(geometry.groups):
            pack_descriptor(
                descriptors,
                group * DESCRIPTOR_SIZE,
                geometry,
                group,
                free_blocks=free_blocks[group],
                free_inodes=per_group - used_inodes[group],
                directories=directories[group],
            )
        for group in range(geometry.groups):
            region = bytearray()
            if has_superblock(group):
                superblock = pack_superblock(
                    geometry,
                    group,
                    free_blocks=sum(free_blocks),
                    free_inodes=geometry.inodes - self.tree.used_inodes,
                    uuid=uuid,
                    label=label,
                    timestamp=timestamp,
                    ext_attr=self.tree.has_xattrs,
                )
                # Group 0 keeps its first KiB for a boot loader; backups start their block.
                offset = SUPERBLOCK_OFFSET if group == 0 else 0
                region += bytes(offset) + superblock
                region += bytes(BLOCK_SIZE - len(region))
                region += descriptors
            start, end = geometry.group_start(group), geometry.group_end(group)
            used = geometry.overhead(group) + self.allocator.used[group]
            holes = [(run.start - start, run.count) for run in freed.get(group, ())]
            region += bitmap(used, end - start, holes)
            region += bitmap(used_inodes[group], per_group)
            first = group * per_group * INODE_SIZE
            region += self.inodes[first : first + used_inodes[group] * INODE_SIZE]
            pwrite_all(self.fd, region, start * BLOCK_SIZE)


def bitmap(used: int, valid: int, holes: Sequence[tuple[int, int]] = ()) -> bytes:
    """A bitmap block: the first `used` bits set but the (start, count) `holes`,
    bits from `valid` on set as padding."""
    bits = bytearray(BLOCK_SIZE)
    _set_bits(bits, 0, used)
    _set_bits(bits, valid, 8 * BLOCK_SIZE)
    for start, count in holes:
        _set_bits(bits, start, start + count, on=False)
    return bytes(bits)


def _set_bits(bits: bytearray, start: int, end: int, on: bool = True) -> None:
    """Set (or with `on=False` clear) bits `start` to `end`, whole bytes at once."""
    whole_from, whole_to = -(-start // 8), end // 8
    if whole_from >= whole_to:
        edges: Sequence[int] = range(start, end)
    else:
        edges = (*range(start, whole_from * 8), *range(whole_to * 8, end))
        bits[whole_from:whole_to] = (b"\xff" if on else b"\0") * (whole_to - whole_from)
    for bit in edges:
        if on:
            bits[bit // 8] |= 1 << bit % 8
        else:
            bits[bit // 8] &= ~(1 << bit % 8)


def queue_copy(
    copier: Copier,
    number: int,
    source: bytes,
    check: int,
    start: int,
    size: int,
    runs: Sequence[Run],
) -> None:
    """Queue the copy of `size` bytes of `source` from `start` into `runs`, one record
    per run; `check` (the size the whole source must have, or -1) goes with the first.
    No runs (an empty file) still makes one record, so that the size is checked."""
    if not runs:
        copier.copy(number, source, check, start, 0, 0)
    copied = 0
    for run in runs:
        length = min(run.count * BLOCK_SIZE, size - copied)
        copier.copy(number, source, check, start + copied, run.start * BLOCK_SIZE, length)
        check = -1
        copied += length


_KEEP_SIZE, _PUNCH_HOLE = 1, 2  # fallocate(2) flags


def _punch_holes(fd: int, runs: Sequence[Run]) -> None:
    """Give back the disk space of blocks freed again (early copies no file took).

    Best effort, through libc (os has no fallocate with flags): where holes
    cannot be punched, the stale bytes stay in blocks marked free.
    """
    if not runs:
        return
    import ctypes  # only here: seldom needed

    fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    for run in runs:
        start, length = run.start * BLOCK_SIZE, run.count * BLOCK_SIZE
        if fallocate(fd, _KEEP_SIZE | _PUNCH_HOLE, start, length) != 0:
            return


def _taking(runs: Sequence[Run]) -> Take:
    """An allocator handing out `runs` (a file's early copy) in order, as asked."""
    left = list(runs)

    def take(count: int) -> list[Run]:
        taken: list[Run] = []
        while count:
            run = left[0]
            if run.count <= count:
                taken.append(left.pop(0))
                count -= run.count
            else:
                taken.append(Run(run.start, count))
                left[0] = Run(run.start + count, run.count - count)
                count = 0
        return taken

    return take


def _pieces(blocks: BlockMap, content: bytes) -> list[tuple[int, bytes | memoryview]]:
    """The indirect blocks and any in-memory content cut into its runs, in disk order
    so that the write buffer gathers them into one write. A file's content (empty
    here) was copied already."""
    pieces: list[tuple[int, bytes | memoryview]] = list(blocks.indirect)
    view = memoryview(content)
    offset = 0
    for run in blocks.data if content else ():
        pieces.append((run.start, view[offset : offset + run.count * BLOCK_SIZE]))
        offset += run.count * BLOCK_SIZE
    pieces.sort(key=lambda piece: piece[0])
    return pieces


def _i_block(node: Node, blocks: BlockMap | None) -> bytes:
    if blocks is not None:
        return blocks.i_block
    entry = node.entry
    if entry.kind is EntryKind.SYMLINK:  # a fast symlink: the target in the inode
        return node.content.ljust(len(_NO_I_BLOCK), b"\0")
    if entry.kind in (EntryKind.CHAR, EntryKind.BLOCK):
        return device_i_block(*entry.rdev)
    return _NO_I_BLOCK


def _hint(err: OSError) -> str:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the file system holding the image is full"
    if err.errno == errno.EIO:
        return "an I/O error: the disk or the content file may be damaged"
    return ""
