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

Early copies (early.py: data copied before the tree is planned, which the
tree may never use) are numbered with the EARLY bit. The first of them to
fail does not stop the helper: it skips the early copies after it, goes on
with the rest, and reports that one when it stops. The parent redoes what
it needs of the skipped ones itself.
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
EARLY = 1 << 63  # in a record's number: an early copy (see above)
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

    def flush(self) -> None:
        """Send the records queued so far, rather than when more come."""
        self._send()

    def _send(self) -> None:
        with contextlib.suppress(BrokenPipeError):  # it stopped at a failure: finish() says
            self._stdin.write(self._pending)
        self._pending.clear()

    def finish(self) -> list[CopyFailure]:
        """Wait for every copy; the failures: the first early one, then the first other."""
        self._send()
        with contextlib.suppress(BrokenPipeError):
            self._stdin.close()
        assert self._process.stdout is not None
        answers = self._process.stdout.read()
        self._process.stdout.close()
        status = self._process.wait()
        failures = [
            CopyFailure(*_ANSWER.unpack_from(answers, at))
            for at in range(0, len(answers) - _ANSWER.size + 1, _ANSWER.size)
        ]
        if status != 0 and not failures:
            raise OSError(f"the copying helper exited with status {status}")
        return failures

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


class _Sources:
    """The open source file: members of one pack come one after another."""

    def __init__(self) -> None:
        self.path = b""
        self.fd = -1

    def open(self, path: bytes) -> int:
        if path != self.path or self.fd < 0:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self.path = path
        return self.fd


def _copy_one(sources: _Sources, image: int, record: tuple[int, ...], path: bytes) -> bytes | None:
    """Do one record's copy; the answer to send if it failed."""
    number, check, offset, target, length, _ = record
    try:
        source = sources.open(path)
    except OSError as err:
        return _ANSWER.pack(number, OPENING, err.errno or errno.EIO, 0)
    if check >= 0:
        size = os.fstat(source).st_size
        if size != check:
            return _ANSWER.pack(number, SHORT, 0, size)
    try:
        copied = copy_range(source, image, offset, target, length)
    except OSError as err:
        return _ANSWER.pack(number, COPYING, err.errno or errno.EIO, 0)
    if copied != length:
        return _ANSWER.pack(number, SHORT, 0, offset + copied)
    return None


def _serve(image_path: str) -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    header = stdin.read(_RECORD.size)
    if not header:
        return  # nothing to copy (or the writer gave up before the image existed)
    image = os.open(image_path, os.O_WRONLY | os.O_CLOEXEC)
    sources = _Sources()
    early_failure = b""  # the first early copy that failed: later early ones are skipped
    while header:
        record = _RECORD.unpack(header)
        path = stdin.read(record[-1])
        early = bool(record[0] & EARLY)
        answer = None if early and early_failure else _copy_one(sources, image, record, path)
        if answer is not None:
            if not early:
                stdout.write(early_failure + answer)
                return
            early_failure = answer
        header = stdin.read(_RECORD.size)
    stdout.write(early_failure)


if __name__ == "__main__":
    _serve(sys.argv[1])
