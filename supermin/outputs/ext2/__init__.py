"""`-f ext2`'s `root`: an ext2 file system image written by our own code.

No mke2fs, no mount, no root: the superblock, group descriptors, bitmaps, inode
tables, directories and block maps are packed here and written into a sparse
file. The result is a revision-1 ext2 with 4 KiB blocks, 256-byte inodes and
the filetype, sparse_super and large_file features, which e2fsck finds clean;
ext_attr too when some entry has extended attributes, kept in its inode.

    plan_tree     entries -> inodes and directory blocks, refusing what ext2 cannot hold
    plan_geometry size -> block groups, checked against what the tree needs
    EarlyCopies   optionally, file data copied in before the tree is known
    ImageWriter   data blocks in inode order, then the metadata of every group
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from supermin.entry import FileEntry
from supermin.errors import OutputError
from supermin.outputs.ext2.blockmap import BLOCK_SIZE
from supermin.outputs.ext2.copier import Copier
from supermin.outputs.ext2.early import EarlyCopies, EarlyCopy
from supermin.outputs.ext2.layout import MAX_BLOCKS, MIB, fits, minimum_size, plan_geometry
from supermin.outputs.ext2.size import parse_size
from supermin.outputs.ext2.tree import plan_tree
from supermin.outputs.ext2.writer import ImageWriter

__all__ = ["EarlyCopies", "parse_size", "write_ext2"]

_LABEL_SIZE = 16
# Bytes of file data from which a copying helper pays for its start (~30 ms).
_HELPER_FROM = 64 * MIB


def write_ext2(
    entries: Sequence[FileEntry],
    image: Path,
    *,
    size: int,
    uuid: bytes,
    timestamp: int,
    label: str = "",
    copy_helper: bool | None = None,
    meanwhile: Callable[[], None] | None = None,
    early: EarlyCopies | None = None,
) -> None:
    """Write `entries` (merge's output: "/" first, parents before children) to `image`.

    `image` becomes a sparse file of apparent size `size`; `uuid` (16 bytes) and
    `timestamp` (the superblock's times) make the bytes reproducible: the same
    arguments always give the same image. Raises OutputError, before writing
    anything, if the tree does not fit or holds something ext2 cannot represent.
    File data is copied by a helper process beside this one (see copier.py)
    when `copy_helper` says so, by default when there is enough of it to pay
    for starting one. `meanwhile` is other work of the caller's (the boot
    files beside the image), done while the helper finishes its copies; if it
    raises, the image is removed as for a failure of its own.

    `early` is the image already created at `image` with `size`, holding data
    copied before the entries were known (early.py); write_ext2 takes it over,
    and removes it on failure as its own.
    """
    raw_label = _check_arguments(size, uuid, timestamp, label)
    if copy_helper is None:
        copy_helper = sum(e.size for e in entries) >= _HELPER_FROM
    copier = None
    fd: int | None = None
    callers = False  # in `meanwhile`: its errors are the caller's, passed on as they are
    try:
        # Started first: its start-up overlaps the planning. It opens the image
        # only when the first copy comes.
        if early is None and copy_helper:
            copier = Copier(str(image))
        tree = plan_tree(entries, timestamp)
        geometry = plan_geometry(size, tree.used_inodes)
        if geometry is None or not fits(geometry, tree.used_blocks, tree.used_inodes):
            need = minimum_size(tree.used_blocks, tree.used_inodes) // MIB
            raise OutputError(
                f"cannot write {image}: the appliance needs at least {need} MiB; "
                f"use --size {need}M or more",
                f"{tree.used_blocks} blocks of {BLOCK_SIZE} bytes and {tree.used_inodes} inodes "
                f"do not fit in {size} bytes",
            )
        claimed: dict[int, EarlyCopy] = {}
        if early is not None:
            claimed = early.claims(tree)
            freed = early.unclaimed_blocks(claimed)
            used = tree.used_blocks + sum(run.count for run in freed)
            if geometry == early.geometry and fits(geometry, used, tree.used_inodes):
                fd, copier = early.hand_over()
                writer = ImageWriter(
                    fd,
                    geometry,
                    tree,
                    copier,
                    allocator=early.allocator,
                    claimed=claimed,
                    freed=freed,
                )
            else:  # another geometry, or no room beside the copies: written again
                early.close()
                early = None
                copier = Copier(str(image)) if copy_helper else None
        if early is None:
            fd = _create(image, size)
            writer = ImageWriter(fd, geometry, tree, copier)
        writer.write(uuid=uuid, label=raw_label, timestamp=timestamp)
        if meanwhile is not None:
            callers = True
            meanwhile()
            callers = False
        writer.finish()
    except BaseException as err:
        if early is not None:
            early.close()  # before the writer took it over: removes the image
        if copier is not None:
            copier.abort()
        if fd is not None:  # else refused before the image was created
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(image)  # a half-written image must not look like a file system
        if isinstance(err, OSError) and not callers:
            raise OutputError(f"cannot write {image}: {err.strerror}") from err
        raise
    assert fd is not None
    os.close(fd)


def _check_arguments(size: int, uuid: bytes, timestamp: int, label: str) -> bytes:
    if len(uuid) != 16:
        raise ValueError(f"an ext2 UUID is 16 bytes, not {len(uuid)}")
    if not 0 <= timestamp < 2**40:
        raise ValueError(f"timestamp {timestamp} is outside the superblock's 40 bits")
    raw_label = label.encode()
    if len(raw_label) > _LABEL_SIZE:
        raise ValueError(f"an ext2 label is at most {_LABEL_SIZE} bytes: {label!r}")
    if size // BLOCK_SIZE > MAX_BLOCKS:
        raise OutputError(
            f"an ext2 image of {size} bytes is too large",
            f"ext2 with {BLOCK_SIZE}-byte blocks holds at most 16 TiB",
        )
    return raw_label


def _create(image: Path, size: int) -> int:
    try:
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise OutputError(f"cannot create {image}: {err.strerror}") from err
    try:
        os.ftruncate(fd, size)  # the apparent size; unwritten blocks stay holes
    except OSError as err:
        os.close(fd)
        raise OutputError(
            f"cannot make {image} {size} bytes long: {err.strerror}",
            "the file system holding it may not allow files this large",
        ) from err
    return fd
