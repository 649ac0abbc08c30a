"""Turn the entry stream into inodes and directory blocks, refusing what ext2 cannot hold.

Inode numbers follow the entries (root 2, lost+found 11, then 12, 13... in entry
order, a hardlink taking its file's), so the same entries always give the same
image. Everything but the content files themselves is checked here, before a byte
of the image is written; a content file of the wrong size is caught while copying.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from supermin.entry import EntryKind, FileEntry
from supermin.errors import OutputError
from supermin.outputs.ext2.blockmap import BLOCK_SIZE, indirect_blocks, max_data_blocks
from supermin.outputs.ext2.xattrs import pack_inode_xattrs

ROOT_INODE = 2
LOST_FOUND_INODE = 11  # s_first_ino: 1-10 are reserved
LOST_FOUND = "/lost+found"
LOST_FOUND_BLOCKS = 4  # mke2fs gives it 16 KiB so e2fsck can reconnect files without allocating
FAST_SYMLINK_MAX = 59  # a target shorter than i_block's 60 bytes lives in the inode
MAX_NAME = 255
LINK_MAX = 32000  # the ext2 driver's limit on hard links and subdirectories
MAX_UID = 2**32 - 1
# i_blocks counts 512-byte sectors in 32 bits without huge_file.
MAX_FILE_BLOCKS = (2**32 - 1) * 512 // BLOCK_SIZE
# Timestamps: 32 signed bits plus the epoch bits of the large inode's *_extra
# fields. e2fsck reads epoch 3 with bit 31 set as a mis-encoded pre-1970 date.
MIN_TIME = -(2**31)
MAX_TIME = 5 * 2**31 - 1  # year 2446
MAX_MAJOR = 0xFFF
MAX_MINOR = 0xFFFFF

# Directory entry file types (the filetype feature).
FILE_TYPES = {
    EntryKind.FILE: 1,
    EntryKind.HARDLINK: 1,
    EntryKind.DIR: 2,
    EntryKind.CHAR: 3,
    EntryKind.BLOCK: 4,
    EntryKind.FIFO: 5,
    EntryKind.SOCKET: 6,
    EntryKind.SYMLINK: 7,
}
_DIRENT = struct.Struct("<IHBB")
_HOSTILE = "the entry list is corrupt or hostile"


@dataclass(slots=True, eq=False)
class Node:
    """One inode: the entry that gives its metadata, and what its blocks hold."""

    number: int
    entry: FileEntry
    parent: int  # for a directory's ".."
    links: int = 1
    children: list[tuple[bytes, int, int]] | None = None  # (name, inode, file type)
    content: bytes = b""  # directory blocks, or a slow symlink's target
    data_blocks: int = 0
    min_blocks: int = 0
    xattrs: bytes = b""  # the in-inode extended attribute area, if any

    @property
    def total_blocks(self) -> int:
        return self.data_blocks + indirect_blocks(self.data_blocks)


@dataclass(frozen=True, slots=True)
class Tree:
    nodes: list[Node]  # by inode number
    used_inodes: int  # the highest inode number taken
    used_blocks: int  # data and indirect blocks of every inode

    @property
    def has_xattrs(self) -> bool:
        return any(node.xattrs for node in self.nodes)


def plan_tree(entries: Sequence[FileEntry], timestamp: int) -> Tree:
    planner = _Planner()
    for entry in entries:
        planner.add(entry)
    return planner.finish(timestamp)


def refuse(entry: FileEntry, why: str, hint: str = _HOSTILE) -> OutputError:
    return OutputError(f"cannot put {entry.path} into an ext2 image: {why}", hint)


class _Planner:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.dirs: dict[str, Node] = {}
        self.files: dict[str, Node] = {}
        self.next_inode = LOST_FOUND_INODE + 1

    def add(self, entry: FileEntry) -> None:
        path = str(entry.path)
        if not self.nodes:
            self._add_root(entry, path)
            return
        parent_path, _, name = path.rpartition("/")
        parent = self.dirs.get(parent_path or "/")
        if parent is None or parent.children is None:
            raise refuse(entry, "its parent is not an earlier directory entry")
        raw = _name(entry, name)
        if parent.children and parent.children[-1][0] == raw:
            raise refuse(entry, "the path occurs twice in the entry list")
        if entry.kind is EntryKind.HARDLINK:
            node = self._hardlink(entry)
        else:
            node = self._inode(entry, path, parent)
        parent.children.append((raw, node.number, FILE_TYPES[entry.kind]))

    def _add_root(self, entry: FileEntry, path: str) -> None:
        if path != "/" or entry.kind is not EntryKind.DIR:
            raise refuse(entry, "the first entry must be the root directory /")
        _check_metadata(entry)
        root = Node(ROOT_INODE, entry, ROOT_INODE, links=2, children=[])
        root.xattrs = _xattrs(entry)
        self.nodes.append(root)
        self.dirs["/"] = root

    def _hardlink(self, entry: FileEntry) -> Node:
        node = self.files.get(str(PurePosixPath(entry.target or "")))
        if node is None:
            raise refuse(entry, f"hardlink to {entry.target}, which is not an earlier file")
        node.links += 1
        return node

    def _inode(self, entry: FileEntry, path: str, parent: Node) -> Node:
        _check_metadata(entry)
        if path == LOST_FOUND:
            if entry.kind is not EntryKind.DIR:
                raise refuse(entry, "e2fsck needs /lost+found to be a directory")
            number = LOST_FOUND_INODE
        else:
            number = self.next_inode
            self.next_inode += 1
        node = Node(number, entry, parent.number, xattrs=_xattrs(entry))
        match entry.kind:
            case EntryKind.DIR:
                node.links = 2  # its own "." and its name in the parent
                node.children = []
                parent.links += 1  # the child's ".."
                self.dirs[path] = node
            case EntryKind.FILE:
                node.data_blocks = _file_blocks(entry)
                self.files[path] = node
            case EntryKind.SYMLINK:
                node.content = _symlink_target(entry)
                node.data_blocks = 0 if len(node.content) <= FAST_SYMLINK_MAX else 1
            case EntryKind.CHAR | EntryKind.BLOCK:
                major, minor = entry.rdev
                if not (0 <= major <= MAX_MAJOR and 0 <= minor <= MAX_MINOR):
                    raise refuse(entry, f"device number {major},{minor} does not fit in 12,20 bits")
            case EntryKind.FIFO | EntryKind.SOCKET:
                pass
            case _:
                raise refuse(entry, f"unknown entry kind {entry.kind!r}")
        self.nodes.append(node)
        return node

    def finish(self, timestamp: int) -> Tree:
        if not self.nodes:
            raise OutputError("cannot write an ext2 image of no entries", "the root / is missing")
        root = self.nodes[0]
        lost_found = self.dirs.get(LOST_FOUND)
        if lost_found is None:
            lost_found = _new_lost_found(timestamp)
            assert root.children is not None
            root.children.insert(0, (b"lost+found", LOST_FOUND_INODE, FILE_TYPES[EntryKind.DIR]))
            root.links += 1
            self.nodes.append(lost_found)
        lost_found.min_blocks = LOST_FOUND_BLOCKS
        self.nodes.sort(key=lambda node: node.number)
        used_blocks = 0
        for node in self.nodes:
            if node.links > LINK_MAX:
                raise refuse(node.entry, f"{node.links} links, more than ext2's {LINK_MAX}")
            if node.children is not None:
                node.content = pack_directory(node)
                node.data_blocks = len(node.content) // BLOCK_SIZE
            used_blocks += node.total_blocks
        return Tree(self.nodes, self.nodes[-1].number, used_blocks)


def _new_lost_found(timestamp: int) -> Node:
    entry = FileEntry(
        PurePosixPath(LOST_FOUND), EntryKind.DIR, 0o700, mtime=timestamp, origin="supermin"
    )
    return Node(LOST_FOUND_INODE, entry, ROOT_INODE, links=2, children=[])


def _check_metadata(entry: FileEntry) -> None:
    if entry.mode & ~0o7777 or entry.mode < 0:
        raise refuse(entry, f"mode {entry.mode:#o} has bits beyond the permissions")
    if not 0 <= entry.uid <= MAX_UID:
        raise refuse(entry, f"uid {entry.uid} does not fit in 32 bits")
    if not 0 <= entry.gid <= MAX_UID:
        raise refuse(entry, f"gid {entry.gid} does not fit in 32 bits")
    if not MIN_TIME <= entry.mtime <= MAX_TIME:
        raise refuse(entry, f"mtime {entry.mtime} is outside ext2's years 1901 to 2446")


def _xattrs(entry: FileEntry) -> bytes:
    if not entry.xattrs:
        return b""
    try:
        return pack_inode_xattrs(entry.xattrs)
    except ValueError as err:
        raise refuse(entry, str(err), "") from None


def _name(entry: FileEntry, name: str) -> bytes:
    raw = os.fsencode(name)
    if not raw or raw in (b".", b"..") or b"\0" in raw:
        raise refuse(entry, f"{name!r} is not a valid file name")
    if len(raw) > MAX_NAME:
        raise refuse(entry, f"its name is {len(raw)} bytes long, more than ext2's {MAX_NAME}")
    return raw


def _file_blocks(entry: FileEntry) -> int:
    if entry.size < 0:
        raise refuse(entry, f"negative size {entry.size}")
    if entry.content is None and entry.size:
        raise refuse(entry, f"no content for its {entry.size} bytes")
    blocks = math.ceil(entry.size / BLOCK_SIZE)
    if blocks > max_data_blocks() or blocks + indirect_blocks(blocks) > MAX_FILE_BLOCKS:
        raise refuse(entry, f"{entry.size} bytes are more than an ext2 file can hold (2 TiB)")
    return blocks


def _symlink_target(entry: FileEntry) -> bytes:
    raw = os.fsencode(entry.target or "")
    if not raw:
        raise refuse(entry, "a symlink without a target")
    if b"\0" in raw:
        raise refuse(entry, "a NUL byte in the symlink target")
    if len(raw) >= BLOCK_SIZE:
        raise refuse(
            entry, f"a {len(raw)}-byte symlink target, longer than ext2's {BLOCK_SIZE - 1}"
        )
    return raw


def pack_directory(node: Node) -> bytes:
    """The directory's blocks: ".", "..", then the children in entry order.

    An entry never crosses a block boundary: the last one in each block stretches
    its rec_len to the end. Blocks beyond the entries (lost+found's preallocation)
    hold a single unused entry spanning the block, as mke2fs writes them.
    """
    children = node.children or []
    records = [(b".", node.number, 2), (b"..", node.parent, 2), *children]
    out = bytearray()
    block_start = 0
    last = 0
    for name, number, file_type in records:
        length = (8 + len(name) + 3) & ~3
        if len(out) + length > block_start + BLOCK_SIZE:
            _stretch(out, last, block_start + BLOCK_SIZE)
            block_start += BLOCK_SIZE
        last = len(out)
        out += _DIRENT.pack(number, length, len(name), file_type)
        out += name
        out += bytes(length - 8 - len(name))
    _stretch(out, last, block_start + BLOCK_SIZE)
    empty = _DIRENT.pack(0, BLOCK_SIZE, 0, 0) + bytes(BLOCK_SIZE - _DIRENT.size)
    while len(out) < node.min_blocks * BLOCK_SIZE:
        out += empty
    return bytes(out)


def _stretch(out: bytearray, record: int, end: int) -> None:
    """Make the record at `record` reach `end`, zero-filling the gap."""
    out += bytes(end - len(out))
    struct.pack_into("<H", out, record + 4, end - record)
