"""Copy file contents into the image from a second process, beside the planner.

Copying the appliance's file data into the image is kernel work
(copy_file_range: ~700 MB for libguestfs's appliance), and placing inodes is
Python work; they could share the two halves of a build. A thread would not
do: after every copy it waits for the GIL, which the busy planner gives up
only every few milliseconds, ten thousand times. A helper interpreter has a
GIL of its own: this file, run as a script (`python -I -S copier.py IMAGE`),
the standard library only.

The parent sends one record per copy on the helper's stdin; the helper answers
on stdout only when a copy fails or its source does not hold what the record
says, then stops. Error messages are made by the parent, from the record's
number.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from typing import IO

# Record: number, the size a whole source file must have (-1: a span of a
# pack, not checked), source offset, target offset, length, then the path.
_RECORD = struct.Struct("<QqQQQH")
# Answer: number, what failed, errno (or 0), bytes the source held.
_ANSWER = struct.Struct("<QBiQ")
# Room for every record of a large appliance (~100 bytes each) in the pipe, so
# the planner never waits for the helper: the default 64 KiB made it wait
# 0.2-0.7 s of the libguestfs build. 1 MiB is what an unprivileged process may ask.
_PIPE_SIZE = 1 << 20
OPENING, COPYING, SHORT = 1, 2, 3
_UNSUPPORTED = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM)
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class CopyFailure:
    number: int
    stage: int  # OPENING, COPYING or SHORT (the source holds `held` bytes, not the length)
    errno: int
    held: int


class Copier:
    """Copies queued into the image `image` by a helper process.

    The helper opens `image` when the first record comes, so it may be started
    before the image exists and its start-up overlaps the planning.
    """

    def __init__(self, image: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, image],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._process.stdin is not None
        self._stdin: IO[bytes] = self._process.stdin
        with contextlib.suppress(OSError):  # a smaller pipe only costs waiting
            fcntl.fcntl(self._stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        self._pending = bytearray()

    def copy(
        self, number: int, source: bytes, check: int, offset: int, target: int, length: int
    ) -> None:
        """Queue a copy of `length` bytes; first, unless `check` is -1, the source's size."""
        record = _RECORD.pack(number, check, offset, target, length, len(source))
        self._pending += record + source
        if len(self._pending) >= 1 << 16:
            self._send()

    def _send(self) -> None:
        with contextlib.suppress(BrokenPipeError):  # it stopped at a failure: finish() says
            self._stdin.write(self._pending)
        self._pending.clear()

    def finish(self) -> CopyFailure | None:
        """Wait for every copy; the first that failed, if any."""
        self._send()
        with contextlib.suppress(BrokenPipeError):
            self._stdin.close()
        assert self._process.stdout is not None
        answer = self._process.stdout.read()
        self._process.stdout.close()
        status = self._process.wait()
        if len(answer) >= _ANSWER.size:
            return CopyFailure(*_ANSWER.unpack_from(answer))
        if status != 0:
            raise OSError(f"the copying helper exited with status {status}")
        return None

    def abort(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()


def copy_range(source: int, image: int, offset: int, target: int, length: int) -> int:
    """Copy `length` bytes; how many the source had. copy_file_range, else pread/pwrite.

    The writer's own copies (no helper) go through here too. copy_file_range
    refuses some file pairs (across file systems before Linux 5.3 and across
    file system types since 5.19): offsets are explicit, so read and write
    simply take over.
    """
    copied = 0
    while copied < length:
        count = length - copied
        try:
            step = os.copy_file_range(source, image, count, offset + copied, target + copied)
        except OSError as err:
            if err.errno not in _UNSUPPORTED:
                raise
            chunk = os.pread(source, min(count, _READ_CHUNK), offset + copied)
            view = memoryview(chunk)
            at = target + copied
            while view:
                written = os.pwrite(image, view, at)
                view, at = view[written:], at + written
            step = len(chunk)
        if step == 0:
            break
        copied += step
    return copied


def _serve(image_path: str) -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    header = stdin.read(_RECORD.size)
    if not header:
        return  # nothing to copy (or the writer gave up before the image existed)
    image = os.open(image_path, os.O_WRONLY | os.O_CLOEXEC)
    opened: tuple[bytes, int] | None = None  # members of one pack come one after another
    while header:
        number, check, offset, target, length, name_length = _RECORD.unpack(header)
        path = stdin.read(name_length)
        try:
            if opened is None or opened[0] != path:
                if opened is not None:
                    os.close(opened[1])
                    opened = None
                opened = (path, os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as err:
            stdout.write(_ANSWER.pack(number, OPENING, err.errno or errno.EIO, 0))
            return
        if check >= 0:
            size = os.fstat(opened[1]).st_size
            if size != check:
                stdout.write(_ANSWER.pack(number, SHORT, 0, size))
                return
        try:
            copied = copy_range(opened[1], image, offset, target, length)
        except OSError as err:
            stdout.write(_ANSWER.pack(number, COPYING, err.errno or errno.EIO, 0))
            return
        if copied != length:
            stdout.write(_ANSWER.pack(number, SHORT, 0, offset + copied))
            return
        header = stdin.read(_RECORD.size)


if __name__ == "__main__":
    _serve(sys.argv[1])
