"""Copy file data into the image before the tree is planned.

Why: building the libguestfs appliance, the copying helper moves ~700 MB
(0.4 s of kernel time), and it could only start once every entry was
collected, merged and planned, so it finished last. But a file's data
blocks need not follow inode order, and where each block group keeps its
metadata depends only on the image's size while the tree has fewer inodes
than one per 16 KiB of disk (mke2fs's ratio; see layout.py). So blocks can
be handed out, and filled by the helper, as soon as a file is known: the
build offers the kernel's modules (~400 MB) right after it walks them,
before it reads the packages, and the installed packages' large files as
soon as it has read them.

The writer then claims each planned file's early copy by its content (the
host file and its size). The blocks of copies that no file claims (the tree
ended up without them) are freed again; their bytes stay behind, as a
deleted file's would. If the planned tree needs another geometry (it has
many small files) or does not fit beside what was copied, the early copies
are thrown away with the image, which is written again the usual way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from supermin.entry import EntryKind, FileEntry
from supermin.outputs.ext2.blockmap import BLOCK_SIZE, Run
from supermin.outputs.ext2.copier import EARLY, Copier
from supermin.outputs.ext2.layout import Geometry, plan_geometry
from supermin.outputs.ext2.tree import Tree
from supermin.outputs.ext2.writer import Allocator, queue_copy

# What identifies an early copy: the whole host file and the size it had.
Key = tuple[Path, int]


@dataclass(frozen=True, slots=True)
class EarlyCopy:
    number: int  # the helper's record number, without the EARLY bit
    runs: list[Run]  # where the data went


def early_key(entry: FileEntry) -> Key | None:
    """The key a FILE entry's early copy is found by; None if it cannot have one."""
    if entry.kind is not EntryKind.FILE or entry.content is None or entry.size == 0:
        return None
    if entry.content_offset is not None:
        return None  # a member of a pack: only whole host files are offered
    return entry.content, entry.size


class EarlyCopies:
    """An image file being filled with the data of files offered before the tree exists.

    Created where the image will be; `write_ext2(..., early=...)` takes it over.
    Until then `close()` stops the helper and removes the image.
    """

    def __init__(self, image: Path, geometry: Geometry, fd: int) -> None:
        self.image = image
        self.geometry = geometry
        self.fd: int | None = fd
        self.copier: Copier | None = Copier(str(image))
        self.allocator = Allocator(geometry)
        self.copies: dict[Key, EarlyCopy] = {}
        self.free = geometry.data_blocks

    @classmethod
    def start(cls, image: Path, size: int) -> EarlyCopies | None:
        """Create `image` of `size` bytes, or None when no file system fits in it.

        OSError if the image cannot be created.
        """
        geometry = plan_geometry(size, 0)
        if geometry is None:
            return None
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, size)
            return cls(image, geometry, fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(image)
            raise

    def offer(self, entries: Iterable[FileEntry], smallest: int = 0) -> None:
        """Start copying the data of these entries' host files of `smallest` bytes or
        more (others are passed over).

        Stops at a file that would take more than half the blocks still free: the
        rest of the tree needs room too (and is written the usual way).
        """
        copier = self.copier
        if copier is None:
            return
        for entry in entries:
            if entry.size < smallest:
                continue
            key = early_key(entry)
            if key is None or key in self.copies:
                continue
            blocks = -(-entry.size // BLOCK_SIZE)
            if blocks > self.free // 2:
                break
            self.free -= blocks
            runs = self.allocator.take(blocks)
            number = len(self.copies)
            self.copies[key] = EarlyCopy(number, runs)
            # The whole file must still have the size it has now.
            queue_copy(copier, EARLY | number, os.fsencode(key[0]), entry.size, 0, entry.size, runs)
        copier.flush()  # the last records too: the writer's come much later

    def claims(self, tree: Tree) -> dict[int, EarlyCopy]:
        """The early copy each of the tree's files takes, by inode number (one file each)."""
        claimed: dict[int, EarlyCopy] = {}
        if not self.copies:
            return claimed
        left = dict(self.copies)
        for node in tree.nodes:
            key = early_key(node.entry)
            if key is not None and key in left:
                claimed[node.number] = left.pop(key)
        return claimed

    def unclaimed_blocks(self, claimed: dict[int, EarlyCopy]) -> list[Run]:
        taken = {copy.number for copy in claimed.values()}
        return [
            run for copy in self.copies.values() if copy.number not in taken for run in copy.runs
        ]

    def hand_over(self) -> tuple[int, Copier]:
        """The image's descriptor and the helper, now the writer's to finish or abort."""
        assert self.fd is not None and self.copier is not None
        fd, copier = self.fd, self.copier
        self.fd = self.copier = None
        return fd, copier

    def close(self) -> None:
        """Stop the helper and remove the image, unless the writer has taken them over."""
        if self.copier is not None:
            self.copier.abort()
            self.copier = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            with contextlib.suppress(OSError):
                os.unlink(self.image)
