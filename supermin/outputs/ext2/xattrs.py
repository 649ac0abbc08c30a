"""Extended attributes kept in the inode, after its large fields (the ext_attr feature).

The layout is e2fsprogs' lib/ext2fs/ext_attr.c (write_xattrs_to_buffer): after
i_extra_isize comes the magic, then the entries (name index and name without
its prefix, the value's offset from the first entry and its size), ended by four
zero bytes; the values fill the space from its end downwards. In-inode entries
carry no hash (e2fsck accepts 0 there, as e2fsprogs writes them). Attributes
that need an external block are refused: this writer makes none.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from supermin.outputs.ext2.layout import EXTRA_ISIZE, INODE_SIZE

GOOD_OLD_INODE_SIZE = 128
XATTR_OFFSET = GOOD_OLD_INODE_SIZE + EXTRA_ISIZE  # where the magic sits in an inode
_MAGIC = struct.Struct("<I")
_MAGIC_VALUE = 0xEA020000
_ENTRY = struct.Struct("<BBHIII")  # name_len, name_index, value_offs, value_inum, size, hash
_END = 4  # the zero word after the last entry
SPACE = INODE_SIZE - XATTR_OFFSET - _MAGIC.size  # entries, their end mark and values
# e2fsprogs' ea_names: the prefix a name index stands for. The POSIX ACLs
# (indexes 2 and 3) have their own on-disk format, not their xattr one.
_PREFIXES = (("user.", 1), ("trusted.", 4), ("security.", 6))


def _pad(size: int) -> int:
    return (size + 3) & ~3


def _split(name: str) -> tuple[int, bytes]:
    for prefix, index in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            short = name[len(prefix) :].encode("utf-8", "surrogateescape")
            if len(short) > 255:
                raise ValueError(f"extended attribute name {name!r} is too long")
            return index, short
    raise ValueError(
        f"extended attribute {name!r} has no ext2 name index"
        " (only user.*, trusted.* and security.* can be written)"
    )


def pack_inode_xattrs(xattrs: Sequence[tuple[str, bytes]]) -> bytes:
    """The bytes from XATTR_OFFSET to the end of the inode; empty without xattrs.

    Raises ValueError, saying why, for a name ext2 cannot index or attributes
    that do not fit in the inode.
    """
    if not xattrs:
        return b""
    # In the order the kernel and e2fsprogs sort a block's: index, name length, name.
    split = sorted(
        ((*_split(name), value) for name, value in xattrs),
        key=lambda item: (item[0], len(item[1]), item[1]),
    )
    need = _END + sum(_pad(_ENTRY.size + len(short)) + _pad(len(v)) for _, short, v in split)
    if need > SPACE:
        raise ValueError(
            f"its extended attributes need {need} bytes, more than the {SPACE} an inode"
            " holds (external attribute blocks are not supported)"
        )
    area = bytearray(SPACE)
    position = 0
    end = SPACE
    for index, short, value in split:
        end -= _pad(len(value))
        area[end : end + len(value)] = value
        _ENTRY.pack_into(area, position, len(short), index, end, 0, len(value), 0)
        area[position + _ENTRY.size : position + _ENTRY.size + len(short)] = short
        position += _pad(_ENTRY.size + len(short))
    return _MAGIC.pack(_MAGIC_VALUE) + bytes(area)
