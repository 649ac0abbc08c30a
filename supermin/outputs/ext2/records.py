"""The on-disk records of a revision-1 ext2: superblock, group descriptor, inode.

Field offsets are those of e2fsprogs' lib/ext2fs/ext2_fs.h; everything is
little-endian. Values that mke2fs would pick at random (the directory hash
seed) are derived from the UUID instead, so images are reproducible.
"""

from __future__ import annotations

import hashlib
import struct

from supermin.outputs.ext2.blockmap import BLOCK_SIZE
from supermin.outputs.ext2.layout import BLOCKS_PER_GROUP, EXTRA_ISIZE, INODE_SIZE, Geometry
from supermin.outputs.ext2.tree import LOST_FOUND_INODE

SUPERBLOCK_OFFSET = 1024  # in group 0; a backup starts its group's first block
SUPERBLOCK_SIZE = 1024
_MAGIC = 0xEF53
_STATE_CLEAN = 1
_ERRORS_CONTINUE = 1
_LOG_BLOCK_SIZE = BLOCK_SIZE.bit_length() - 11  # block size = 1024 << this
_REV_DYNAMIC = 1
_COMPAT_EXT_ATTR = 0x0008
_INCOMPAT_FILETYPE = 0x0002
_RO_COMPAT_SPARSE_SUPER = 0x0001
_RO_COMPAT_LARGE_FILE = 0x0002
_MOUNT_USER_XATTR_ACL = 0x000C  # mke2fs.conf's default_mntopts
_FLAG_SIGNED_HASH = 0x0001  # what mke2fs records on x86, where char is signed
_HASH_HALF_MD4 = 1

_INODE = struct.Struct("<HHIIIIIHHIII60sIIIIHHHHHHHHIIIIIII")
_DESCRIPTOR = struct.Struct("<IIIHHHH12x")
_DEVICE_OLD = struct.Struct("<I56x")
_DEVICE_NEW = struct.Struct("<II52x")


def split_time(seconds: int) -> tuple[int, int]:
    """(i_*time, i_*time_extra) as Linux encodes it: 32 signed bits plus epoch bits."""
    low = seconds & 0xFFFFFFFF
    signed = low - (1 << 32) if low & (1 << 31) else low
    return low, ((seconds - signed) >> 32) & 3


def pack_inode(
    buffer: bytearray,
    offset: int,
    *,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    links: int,
    blocks: int,
    i_block: bytes,
) -> None:
    """An inode whose atime, ctime, mtime and crtime are all `mtime`."""
    time, extra = split_time(mtime)
    _INODE.pack_into(
        buffer,
        offset,
        mode,
        uid & 0xFFFF,
        size & 0xFFFFFFFF,
        time,  # atime
        time,  # ctime
        time,  # mtime
        0,  # dtime
        gid & 0xFFFF,
        links,
        blocks * (BLOCK_SIZE // 512),  # i_blocks counts 512-byte sectors
        0,  # flags
        0,  # osd1
        i_block,
        0,  # generation
        0,  # file_acl
        size >> 32,  # size_high (large_file)
        0,  # faddr
        0,  # blocks_hi
        0,  # file_acl_high
        uid >> 16,
        gid >> 16,
        0,  # checksum_lo
        0,  # reserved
        EXTRA_ISIZE,
        0,  # checksum_hi
        extra,  # ctime_extra
        extra,  # mtime_extra
        extra,  # atime_extra
        time,  # crtime
        extra,  # crtime_extra
        0,  # version_hi
        0,  # projid
    )


def device_i_block(major: int, minor: int) -> bytes:
    """A device number in i_block as Linux stores it: the old 8:8 form when it fits."""
    if major < 256 and minor < 256:
        return _DEVICE_OLD.pack(major << 8 | minor)
    return _DEVICE_NEW.pack(0, (minor & 0xFF) | major << 8 | (minor & ~0xFF) << 12)


def pack_descriptor(
    buffer: bytearray,
    offset: int,
    geometry: Geometry,
    group: int,
    *,
    free_blocks: int,
    free_inodes: int,
    directories: int,
) -> None:
    _DESCRIPTOR.pack_into(
        buffer,
        offset,
        geometry.block_bitmap(group),
        geometry.inode_bitmap(group),
        geometry.inode_table(group),
        free_blocks,
        free_inodes,
        directories,
        0,  # flags: no uninit_bg
    )


def pack_superblock(
    geometry: Geometry,
    group: int,
    *,
    free_blocks: int,
    free_inodes: int,
    uuid: bytes,
    label: bytes,
    timestamp: int,
    ext_attr: bool = False,
) -> bytes:
    """The superblock, or its backup in `group`; `ext_attr` when inodes hold xattrs."""
    block = bytearray(SUPERBLOCK_SIZE)
    time_low, time_high = timestamp & 0xFFFFFFFF, timestamp >> 32
    fields: list[tuple[int, str, int | bytes]] = [
        (0x000, "I", geometry.inodes),
        (0x004, "I", geometry.blocks),
        (0x008, "I", geometry.reserved_blocks),
        (0x00C, "I", free_blocks),
        (0x010, "I", free_inodes),
        (0x014, "I", 0),  # first data block: 0 with blocks over 1 KiB
        (0x018, "I", _LOG_BLOCK_SIZE),
        (0x01C, "I", _LOG_BLOCK_SIZE),  # fragments are blocks
        (0x020, "I", BLOCKS_PER_GROUP),
        (0x024, "I", BLOCKS_PER_GROUP),
        (0x028, "I", geometry.inodes_per_group),
        (0x030, "I", time_low),  # last write
        (0x036, "h", -1),  # no forced check after N mounts
        (0x038, "H", _MAGIC),
        (0x03A, "H", _STATE_CLEAN),
        (0x03C, "H", _ERRORS_CONTINUE),
        (0x040, "I", time_low),  # last check
        (0x04C, "I", _REV_DYNAMIC),  # creator OS 0 (Linux) before it
        (0x054, "I", LOST_FOUND_INODE),  # first non-reserved inode
        (0x058, "H", INODE_SIZE),
        (0x05A, "H", group),
        (0x05C, "I", _COMPAT_EXT_ATTR if ext_attr else 0),
        (0x060, "I", _INCOMPAT_FILETYPE),
        (0x064, "I", _RO_COMPAT_SPARSE_SUPER | _RO_COMPAT_LARGE_FILE),
        (0x068, "16s", uuid),
        (0x078, "16s", label),
        (0x0EC, "16s", hashlib.sha256(b"supermin ext2 hash seed\0" + uuid).digest()[:16]),
        (0x0FC, "B", _HASH_HALF_MD4),
        (0x100, "I", _MOUNT_USER_XATTR_ACL),
        (0x108, "I", time_low),  # mkfs time
        (0x15C, "H", EXTRA_ISIZE),  # min_extra_isize
        (0x15E, "H", EXTRA_ISIZE),  # want_extra_isize
        (0x160, "I", _FLAG_SIGNED_HASH),
        (0x274, "B", time_high),  # wtime_hi
        (0x276, "B", time_high),  # mkfs_time_hi
        (0x277, "B", time_high),  # lastcheck_hi
    ]
    for offset, fmt, value in fields:
        struct.pack_into("<" + fmt, block, offset, value)
    return bytes(block)
