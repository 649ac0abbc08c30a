"""Copy file data in the kernel: a reflink where the file system shares blocks.

copy_file_range(2) shares blocks instead of copying them on btrfs and XFS
(also between btrfs subvolumes, where link(2) is refused), and copies in
the kernel elsewhere. It refuses some file pairs (across file systems before
Linux 5.3 and again across file system types since 5.19, or on file systems
without support): sendfile(2), and then plain reads and writes, take over.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

_CHUNK = 1 << 30
_READ_BUFFER = 1 << 20
_UNSUPPORTED = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM}
)

_Step = Callable[[int, int, int, int], int]  # (src, dst, offset, count) -> bytes copied


def _pump(step: _Step, src: int, dst: int, offset: int, size: int) -> int:
    copied = 0
    while copied < size:
        count = step(src, dst, offset + copied, min(size - copied, _CHUNK))
        if count == 0:
            break
        copied += count
    return copied


# Each reads at an offset of its own, leaving the source's position alone:
# a spool pack's descriptor is shared by the chroot writer's threads.
def _by_copy_file_range(src: int, dst: int, offset: int, count: int) -> int:
    return os.copy_file_range(src, dst, count, offset)


def _by_sendfile(src: int, dst: int, offset: int, count: int) -> int:
    return os.sendfile(dst, src, offset, count)


def _by_read_write(src: int, dst: int, offset: int, count: int) -> int:
    data = os.pread(src, min(count, _READ_BUFFER), offset)
    view = memoryview(data)
    while view:
        view = view[os.write(dst, view) :]
    return len(data)


def copy_range(src: int, dst: int, offset: int, size: int) -> int:
    """Append `size` bytes from `offset` of `src` to `dst`; how many `src` had.

    `dst` must be empty and at its start: only a refusal before anything was
    written can be retried another way.
    """
    for step in (_by_copy_file_range, _by_sendfile):
        try:
            return _pump(step, src, dst, offset, size)
        except OSError as err:
            if err.errno not in _UNSUPPORTED or os.lseek(dst, 0, os.SEEK_CUR) != 0:
                raise
    return _pump(_by_read_write, src, dst, offset, size)


def copy_file(source: Path, target: Path, mode: int = 0o600) -> None:
    """Copy `source` whole to the new file `target` (never an existing one).

    On any failure `target` is removed: no partial copy is left behind.
    """
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(src).st_size
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        dst = os.open(target, flags, mode)
        try:
            if copy_range(src, dst, 0, size) != size:
                raise OSError(errno.EIO, "the file shrank while it was copied", str(source))
        except BaseException:
            os.unlink(target)
            raise
        finally:
            os.close(dst)
    finally:
        os.close(src)
