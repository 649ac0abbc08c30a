"""Write the entry stream as a directory tree, with or without root.

Safe by construction: every name is created relative to the file descriptor of
its parent directory, and that descriptor was reached from the root one
component at a time with O_NOFOLLOW. Every creation is exclusive (O_EXCL,
mkdir, mknod, symlink, link all fail on an existing name), so whatever the
entries say, nothing is written through a symlink or outside the root.

Without root the tree gets the builder's ownership and no device nodes; the
mtree file written beside it (outputs.mtree) records the truth. Extended
attributes are set after the owner and mode (chown clears security.capability);
without root only the `user.*` ones can be, and mtree(5) has no keyword for the
rest: they are lost from such a tree (`dropped_xattrs` names them).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import select
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from supermin.content import Content
from supermin.entry import EntryKind, FileEntry
from supermin.errors import OutputError
from supermin.interpreter import start_function
from supermin.kernelcopy import copy_range
from supermin.reading import default_jobs

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Directories stay writable by the builder until all their children exist.
_BUILDING_DIR_MODE = 0o700
_PRIVATE_MODE = 0o600
_OPEN_PACKS = 256  # descriptors kept open by _Sources, well below a default limit of 1024
_HOSTILE = "the entry list is corrupt or hostile"
# From this many regular files on, helper processes write runs of them (see
# _Helpers); below it, starting one (~0.05 s) would cost more than it saves.
HELPER_THRESHOLD = 2000
_MAX_HELPERS = 7
_GO, _STOP = b"g", b"s"

Names = list[str]


def write_chroot(
    entries: Sequence[FileEntry],
    root: Path,
    *,
    privileged: bool | None = None,
    jobs: int | None = None,
) -> None:
    """Create every entry under the existing, empty directory `root`.

    `privileged` (default: running as root) decides whether owners are set and
    device nodes made. Sockets are never created. Directory modes and mtimes
    are applied last, deepest first, so that read-only directories can still be
    filled and their mtimes are not disturbed by their children. Regular files
    are created by `jobs` writers at once (default: one per core): creating a
    file is system time in the file system's inode allocator, which overlaps.
    For a tree of HELPER_THRESHOLD files or more, all writers but this process
    are helper processes (see _Helpers); otherwise they are threads.
    """
    if privileged is None:
        privileged = os.geteuid() == 0
    jobs = jobs or default_jobs()
    writer = _ChrootWriter(root, privileged)
    try:
        if jobs > 1 and _plain_tree(entries):
            writer.add_in_parallel(entries, jobs)
        else:
            for entry in entries:
                writer.add(entry)
        writer.finish()
    finally:
        writer.close()


def _plain_tree(entries: Sequence[FileEntry]) -> bool:
    """Whether regular files may be created in any order, by several threads.

    They may when no path repeats, every entry's parent is a directory listed
    before it, and every hardlink follows its file; anything else is left to
    the one-at-a-time writer, which then fails on the same entry with the same
    message as always. A merged entry list is always plain.
    """
    kinds: dict[str, EntryKind] = {}
    for entry in entries:
        path = str(entry.path)
        if path in kinds:
            return False
        if path == "/":
            if entry.kind is not EntryKind.DIR:
                return False
        else:
            parent = path[: path.rfind("/")] or "/"
            if parent != "/" and kinds.get(parent) is not EntryKind.DIR:
                return False
        if entry.kind is EntryKind.HARDLINK and kinds.get(entry.target or "") is not EntryKind.FILE:
            return False
        kinds[path] = entry.kind
    return True


def settable_xattrs(entry: FileEntry, privileged: bool) -> tuple[tuple[str, bytes], ...]:
    """The entry's xattrs that a writer with or without root can set."""
    if privileged:
        return entry.xattrs
    return tuple((name, value) for name, value in entry.xattrs if name.startswith("user."))


def dropped_xattrs(entries: Sequence[FileEntry], *, privileged: bool | None = None) -> list[str]:
    """Paths whose xattrs write_chroot cannot set with these privileges (default: ours)."""
    if privileged is None:
        privileged = os.geteuid() == 0
    return [
        str(e.path)
        for e in entries
        if e.kind is not EntryKind.HARDLINK and settable_xattrs(e, privileged) != e.xattrs
    ]


# A regular file to write, as plain values: (path, mode, uid, gid, mtime,
# size, content file or None, offset in it or None, the xattrs the writer can
# set). Plain so that a helper process takes it in at once: FileEntry records
# cost 0.045 s to pickle for a share of ~5,000 files here, before any
# directory was made, and 0.06 s to unpickle there (their paths parsed again).
_FileJob = tuple[
    str, int, int, int, int, int, str | None, int | None, tuple[tuple[str, bytes], ...]
]


def _file_job(entry: FileEntry, privileged: bool) -> _FileJob:
    return (
        str(entry.path),
        entry.mode,
        entry.uid,
        entry.gid,
        entry.mtime,
        entry.size,
        None if entry.content is None else str(entry.content),
        entry.content_offset,
        entry.xattrs and settable_xattrs(entry, privileged),
    )


def _path_names(path: str) -> Names:
    """The components of an absolute image path below the root, given as text,
    refusing any that could climb out.

    Checked with string searches, not component by component: this runs for
    every file, in every writer.
    """
    if not path.startswith("/") or path == "/":
        raise ValueError(f"{path!r} is not an absolute image path below the root")
    names = path[1:].split("/")
    if (
        "\0" in path
        or "//" in path
        or "/./" in path
        or "/../" in path
        or path.endswith(("/", "/.", "/.."))
    ):
        bad = next(name for name in names if name in ("", ".", "..") or "\0" in name)
        raise ValueError(f"{path!r} has a {bad!r} component")
    return names


def _open_beneath(root_fd: int, names: Names) -> int:
    """A new descriptor of the directory `names` below `root_fd`, never via a symlink."""
    fd = os.dup(root_fd)
    try:
        for name in names:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


class _DirStack:
    """Open descriptors of the directories leading to the most recent parent.

    The entries come sorted, so consecutive entries share most of their parent
    path: only the components that differ are closed and reopened.
    """

    def __init__(self, root_fd: int) -> None:
        self._fds = [root_fd]
        self._names: list[str] = []

    def open(self, names: Sequence[str]) -> int:
        keep = 0
        limit = min(len(names), len(self._names))
        while keep < limit and names[keep] == self._names[keep]:
            keep += 1
        while len(self._names) > keep:
            self._names.pop()
            os.close(self._fds.pop())
        for name in names[keep:]:
            self._fds.append(os.open(name, _DIR_FLAGS, dir_fd=self._fds[-1]))
            self._names.append(name)
        return self._fds[-1]

    def close(self) -> None:
        """Close every descriptor but the root's, which belongs to the caller."""
        while self._names:
            self._names.pop()
            os.close(self._fds.pop())


class _Sources:
    """Descriptors to read file contents from; a spool pack's is opened once.

    A pack holds every member of one archive, hundreds of the tree's files:
    opening, measuring and closing it for each of them was three system
    calls a file. Up to _OPEN_PACKS stay open, shared by the threads (every
    read gives its offset); past that, and for whole files, each is opened
    for its file alone.
    """

    def __init__(self) -> None:
        self._packs: dict[str, tuple[int, int]] = {}  # path -> (descriptor, size)
        self._lock = threading.Lock()

    def open(self, path: str, offset: int | None, length: int) -> tuple[int, int, int, bool]:
        """(descriptor, offset, bytes the file holds of ours, whether the caller closes it).

        The `length` bytes at `offset` of the pack `path`, or with no offset
        the whole file. OSError when unreadable. As Content.open: the bytes
        held are the whole file's size now, or for a span fewer than its
        length only when the pack was cut short.
        """
        if offset is None or len(self._packs) >= _OPEN_PACKS:
            content = Content(Path(path), offset, length)
            fd, held = content.open()
            return fd, content.start, held, True
        with self._lock:
            found = self._packs.get(path)
            if found is None:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                found = self._packs[path] = (fd, os.fstat(fd).st_size)
        fd, size = found
        return fd, offset, max(0, min(length, size - offset)), False

    def close(self) -> None:
        with self._lock:
            for fd, _ in self._packs.values():
                os.close(fd)
            self._packs.clear()


def _hint(err: OSError, privileged: bool) -> str:
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "the file system holding the output is full"
    if code == errno.EROFS:
        return "the output is on a read-only file system"
    if code in (errno.EACCES, errno.EPERM):
        if privileged:
            return "refused even to root: a restricted container or file system?"
        return "the output directory must be writable by the user running supermin"
    if code == errno.EEXIST:
        return "the path occurs twice in the entry list, or the output was not empty"
    if code in (errno.ELOOP, errno.ENOTDIR):
        return f"a parent of the path is a symlink or not a directory: {_HOSTILE}"
    if code == errno.ENOENT:
        return "a parent directory is missing from the entry list, or a content file vanished"
    if code in (errno.ENOTSUP, errno.EOPNOTSUPP):
        return "the output file system does not support these extended attributes"
    if code in (errno.EMFILE, errno.ENFILE):
        return "too many open files"
    if code == errno.EINVAL and privileged:
        return "an owner id may not be mapped in this user namespace"
    return ""


def _span(content: str, offset: int | None) -> str:
    """Where a file's bytes are, for a message: a whole file, or a pack at an offset."""
    return content if offset is None else f"{content} at {offset}"


def _umask() -> int:
    """This process's umask, read without setting it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: every file gets its chmod


class _ChrootWriter:
    def __init__(self, root: Path, privileged: bool, root_fd: int | None = None) -> None:
        """A writer into `root`, through a descriptor of its own (a dup of `root_fd` if given)."""
        self.root = root
        self.privileged = privileged
        try:
            if root_fd is None:
                self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            else:
                self.root_fd = os.dup(root_fd)
            root_mode = os.fstat(self.root_fd).st_mode
        except OSError as err:
            raise OutputError(
                f"cannot open the output directory {root}: {err.strerror}",
                _hint(err, privileged),
            ) from err
        self.parents = _DirStack(self.root_fd)
        self.files: set[str] = set()  # regular files written (as text: C hashes), for hardlinks
        self.dirs: list[tuple[Names, FileEntry]] = []  # metadata applied by finish()
        self.sources = _Sources()
        # A file is created with its mode when the umask leaves it whole and
        # no chown must come first, and by root it gets our ids unless a
        # set-group-ID root hands down its group: then its fchmod and fchown
        # are left out, two of the six system calls of a file.
        self._umask = _umask()
        self._own_ids = None if root_mode & stat.S_ISGID else (os.geteuid(), os.getegid())

    def close(self) -> None:
        self.parents.close()
        os.close(self.root_fd)
        self.sources.close()

    def _error(self, path: object, err: OSError) -> OutputError:
        return OutputError(
            f"cannot write {path} into {self.root}: {err.strerror}",
            _hint(err, self.privileged),
        )

    def _refuse(self, path: object, why: str, hint: str = _HOSTILE) -> OutputError:
        return OutputError(f"cannot write {path} into {self.root}: {why}", hint)

    def add_in_parallel(self, entries: Sequence[FileEntry], jobs: int) -> None:
        """Directories, then the files by `jobs` writers and the other nodes, then hardlinks.

        Only for a `_plain_tree`, where that order changes nothing: every
        entry's parent is a directory made before.
        """
        files = [_file_job(e, self.privileged) for e in entries if e.kind is EntryKind.FILE]
        helpers = None
        if len(files) >= HELPER_THRESHOLD:
            helpers = _Helpers.start(self, files, jobs - 1)
        try:
            # Meanwhile any helpers start up and take in the files.
            for entry in entries:
                if entry.kind is EntryKind.DIR:
                    self.add(entry)
            if helpers is not None:
                helpers.go()  # they begin on the files while this process makes the rest
            for entry in entries:
                if entry.kind not in (EntryKind.DIR, EntryKind.FILE, EntryKind.HARDLINK):
                    self.add(entry)
            if helpers is None:
                self._add_in_threads(files, jobs)
            else:
                helpers.own = self.add_claimed(files, helpers.run_size, helpers.claims)
                helpers.finish()  # the first helper that failed says why
        except BaseException:
            if helpers is not None:
                helpers.stop()
            raise
        finally:
            if helpers is not None:
                helpers.claims.close()
        if helpers is not None:
            self.files.update(job[0] for job in files)
        for entry in entries:
            if entry.kind is EntryKind.HARDLINK:
                self.add(entry)

    def _add_in_threads(self, files: Sequence[_FileJob], jobs: int) -> None:
        # Contiguous runs of the sorted list keep each thread's open parents useful.
        size = max(1, -(-len(files) // (jobs * 4)))
        stop = threading.Event()
        with ThreadPoolExecutor(jobs, thread_name_prefix="supermin-write") as pool:
            runs = [
                pool.submit(self._add_run, files[i : i + size], stop)
                for i in range(0, len(files), size)
            ]
        for run in runs:
            run.result()  # the first run that failed says why

    def _add_run(self, run: Sequence[_FileJob], stop: threading.Event) -> None:
        parents = _DirStack(self.root_fd)
        try:
            for job in run:
                if stop.is_set():
                    return
                self._add_file(job, parents)
                self.files.add(job[0])
        except BaseException:
            stop.set()
            raise
        finally:
            parents.close()

    def add_claimed(self, files: Sequence[_FileJob], run_size: int, claims: _Claims) -> int:
        """Write the runs of `files` this writer claims first; how many files that was."""
        parents = _DirStack(self.root_fd)
        written = 0
        try:
            while (number := claims.next()) is not None:
                run = files[number * run_size : (number + 1) * run_size]
                for job in run:
                    self._add_file(job, parents)
                written += len(run)
        finally:
            parents.close()
        return written

    def _add_file(self, job: _FileJob, parents: _DirStack) -> None:
        try:
            names = _path_names(job[0])
            self._write_file(parents.open(names[:-1]), names[-1], job)
        except OSError as err:
            raise self._error(job[0], err) from err
        except ValueError as err:  # e.g. a NUL byte in a name
            raise self._refuse(job[0], str(err)) from None

    def add(self, entry: FileEntry, parents: _DirStack | None = None) -> None:
        path = str(entry.path)
        try:
            names = [] if path == "/" else _path_names(path)
        except ValueError as err:
            raise self._refuse(entry.path, str(err)) from None
        try:
            if not names:
                if entry.kind is not EntryKind.DIR:
                    raise self._refuse(entry.path, f"the root cannot be a {entry.kind}")
                self.dirs.append((names, entry))
                return
            parent = (parents or self.parents).open(names[:-1])
            self._create(parent, names, entry)
        except OSError as err:
            raise self._error(entry.path, err) from err
        except ValueError as err:  # e.g. a NUL byte in a link target
            raise self._refuse(entry.path, str(err)) from None

    def _create(self, parent: int, names: Names, entry: FileEntry) -> None:
        name = names[-1]
        match entry.kind:
            case EntryKind.DIR:
                os.mkdir(name, _BUILDING_DIR_MODE, dir_fd=parent)
                self.dirs.append((names, entry))
            case EntryKind.FILE:
                self._write_file(parent, name, _file_job(entry, self.privileged))
                self.files.add(str(entry.path))
            case EntryKind.SYMLINK:
                self._write_symlink(parent, name, entry)
            case EntryKind.HARDLINK:
                self._write_hardlink(parent, names, entry)
            case EntryKind.FIFO:
                os.mkfifo(name, _PRIVATE_MODE, dir_fd=parent)
                self._finish_node(parent, name, entry)
            case EntryKind.CHAR | EntryKind.BLOCK:
                # Only root may make device nodes; the mtree records them for the others.
                if self.privileged:
                    device = os.makedev(*entry.rdev)
                    mode = stat.S_IFCHR if entry.kind is EntryKind.CHAR else stat.S_IFBLK
                    os.mknod(name, mode | _PRIVATE_MODE, device, dir_fd=parent)
                    self._finish_node(parent, name, entry)
            case EntryKind.SOCKET:
                pass  # a socket only means something while a process listens on it

    def _write_file(self, parent: int, name: str, job: _FileJob) -> None:
        path, mode, uid, gid, mtime, size, content, offset, xattrs = job
        # Set-ID bits go on after chown, which clears them.
        as_created = mode if not mode & (self._umask | 0o7000) else _PRIVATE_MODE
        fd = os.open(name, _NEW_FILE_FLAGS, as_created, dir_fd=parent)
        try:
            if content is not None:
                self._copy_content(fd, path, content, offset, size)
            elif size:
                raise self._refuse(path, f"no content for its {size} bytes")
            if self.privileged and (uid, gid) != self._own_ids:
                os.fchown(fd, uid, gid)
            if as_created != mode:
                os.fchmod(fd, mode)
            for attribute, value in xattrs:
                os.setxattr(fd, attribute, value)
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)

    def _copy_content(
        self, dst: int, path: str, content: str, offset: int | None, size: int
    ) -> None:
        try:
            src, start, actual, owned = self.sources.open(content, offset, size)
        except OSError as err:
            raise self._refuse(
                path,
                f"cannot read {_span(content, offset)}: {err.strerror}",
                "its content file is unreadable or was removed while supermin ran",
            ) from err
        try:
            copied = copy_range(src, dst, start, size) if actual == size else actual
        finally:
            if owned:
                os.close(src)
        if copied != size:
            raise self._refuse(
                path,
                f"{_span(content, offset)} holds {copied} bytes, the entry says {size}",
                "a content file changed while supermin ran; build again",
            )

    def _write_symlink(self, parent: int, name: str, entry: FileEntry) -> None:
        if not entry.target:
            raise self._refuse(entry.path, "a symlink without a target")
        os.symlink(entry.target, name, dir_fd=parent)
        if self.privileged:
            os.chown(name, entry.uid, entry.gid, dir_fd=parent, follow_symlinks=False)
        self._set_xattrs_at(parent, name, entry)
        os.utime(name, (entry.mtime, entry.mtime), dir_fd=parent, follow_symlinks=False)

    def _write_hardlink(self, parent: int, names: Names, entry: FileEntry) -> None:
        """Link to an earlier regular file; the inode already has its metadata."""
        target = PurePosixPath(entry.target or "")
        if str(target) not in self.files:
            raise self._refuse(
                entry.path, f"hardlink to {target}, which is not a file written before"
            )
        target_names = _path_names(str(target))
        same_dir = target_names[:-1] == names[:-1]
        source_dir = parent if same_dir else _open_beneath(self.root_fd, target_names[:-1])
        try:
            os.link(
                target_names[-1],
                names[-1],
                src_dir_fd=source_dir,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
        finally:
            if not same_dir:
                os.close(source_dir)

    def _finish_node(self, parent: int, name: str, entry: FileEntry) -> None:
        if self.privileged:
            os.chown(name, entry.uid, entry.gid, dir_fd=parent, follow_symlinks=False)
        # chmod cannot refuse to follow a symlink with dir_fd, but the name was
        # just created exclusively by us, so it is the node, not a symlink.
        os.chmod(name, entry.mode, dir_fd=parent)
        self._set_xattrs_at(parent, name, entry)
        os.utime(name, (entry.mtime, entry.mtime), dir_fd=parent, follow_symlinks=False)

    def _set_xattrs_at(self, parent: int, name: str, entry: FileEntry) -> None:
        """Set xattrs on a node that cannot be opened (symlink, FIFO, device).

        setxattr(2) has no *at form: the parent is reached through its
        descriptor's /proc link, and the name itself is not followed.
        """
        for attribute, value in settable_xattrs(entry, self.privileged):
            os.setxattr(f"/proc/self/fd/{parent}/{name}", attribute, value, follow_symlinks=False)

    def finish(self) -> None:
        """Apply directory owners, modes and mtimes, deepest first, the root last."""
        for names, entry in sorted(self.dirs, key=lambda item: -len(item[0])):
            try:
                if names:
                    parent = self.parents.open(names[:-1])
                    fd = os.open(names[-1], _DIR_FLAGS, dir_fd=parent)
                else:
                    fd = os.dup(self.root_fd)
                try:
                    self._finish_dir(fd, entry)
                finally:
                    os.close(fd)
            except OSError as err:
                raise self._error(entry.path, err) from err

    def _finish_dir(self, fd: int, entry: FileEntry) -> None:
        if self.privileged:
            os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, entry.mode)
        for attribute, value in settable_xattrs(entry, self.privileged):
            os.setxattr(fd, attribute, value)
        os.utime(fd, (entry.mtime, entry.mtime))


class _Claims:
    """The numbers of the runs of files, each handed to whichever writer asks first.

    A pipe filled with every number before anyone reads it: Linux reads a
    pipe under its lock, so a read of one number's four bytes takes exactly
    one, whichever of the processes sharing the pipe makes it. A writer that
    is started late or meets slower files simply claims fewer runs; a fixed
    share for each left one core idle at the end for a sixth of the time.
    """

    _SIZE = 4
    LIMIT = select.PIPE_BUF // _SIZE  # every number in one atomic write, which cannot block

    def __init__(self, count: int, writers: int) -> None:
        if not 0 < count <= self.LIMIT:
            raise ValueError(f"{count} runs: from 1 to {self.LIMIT}")
        # Interleaved from `writers` regions of the tree, so that writers
        # taking turns work in different directories, each of which one
        # creation at a time may change.
        region = -(-count // writers)
        order = [r * region + i for i in range(region) for r in range(writers)]
        numbers = b"".join(n.to_bytes(self._SIZE, "big") for n in order if n < count)
        self.fd, feed = os.pipe()
        try:
            os.write(feed, numbers)
        finally:
            os.close(feed)

    @classmethod
    def of(cls, fd: int) -> _Claims:
        """The claims behind a descriptor passed to a helper process."""
        claims = cls.__new__(cls)
        claims.fd = fd
        return claims

    def next(self) -> int | None:
        """The next unclaimed run, None when none is left."""
        number = os.read(self.fd, self._SIZE)
        if not number:
            return None
        if len(number) != self._SIZE:
            raise OSError(errno.EIO, "a run's number was split between writers")
        return int.from_bytes(number, "big")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _Helpers:
    """Helper processes, writing regular files beside this one.

    Threads of one process hand the GIL over at each of the ten or so system
    calls a file takes; with two writer threads on two cores that handover
    cost a third as much CPU time as the writing itself. A helper is a fresh
    interpreter (not a fork: copy-on-write faults on this process's heap cost
    more than they save), running this module's _ChrootWriter on a duplicate
    of the same root descriptor, so every safety of the writer holds in it
    unchanged. It is started before the directories are made, takes in the
    list of files meanwhile, and when told that the directories exist writes
    the runs of that list it claims (see _Claims), as this process does.
    """

    def __init__(self, root: Path, run_size: int, claims: _Claims) -> None:
        self.root = root
        self.run_size = run_size
        self.claims = claims
        self.processes: list[subprocess.Popen[bytes]] = []
        self.feeders: list[threading.Thread] = []
        self.own = 0  # files this process wrote
        self.written: list[int] = []  # files each helper wrote, once finished
        self._decision = _STOP
        self._decided = threading.Event()

    @classmethod
    def start(cls, writer: _ChrootWriter, files: Sequence[_FileJob], count: int) -> _Helpers | None:
        """`count` helpers fed the list of files; None if none can start."""
        count = min(count, _MAX_HELPERS)
        if count < 1:
            return None
        writers = count + 1
        # Runs of contiguous files keep each writer's open parents useful;
        # sixteen a writer balance the work to within a few milliseconds.
        runs = min(_Claims.LIMIT, writers * 16, len(files))
        run_size = -(-len(files) // runs)
        claims = _Claims(-(-len(files) // run_size), writers)
        helpers = cls(writer.root, run_size, claims)
        payload = pickle.dumps(
            (writer.root_fd, str(writer.root), writer.privileged, files, run_size, claims.fd),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        for _ in range(count):
            process = start_function(
                "supermin.outputs.chroot",
                "serve_files",
                site=False,
                pass_fds=(writer.root_fd, claims.fd),
            )
            if process is None:
                helpers.stop()
                claims.close()
                return None  # threads write it all
            helpers.processes.append(process)
            # A daemon: should this process end unexpectedly, the helper reads EOF and quits.
            feeder = threading.Thread(
                target=helpers._feed,
                args=(process, payload),
                name="supermin-helper-feed",
                daemon=True,
            )
            feeder.start()
            helpers.feeders.append(feeder)
        return helpers

    def _feed(self, process: subprocess.Popen[bytes], payload: bytes) -> None:
        stdin = process.stdin
        assert stdin is not None
        try:
            stdin.write(len(payload).to_bytes(8, "big") + payload)
            stdin.flush()
            self._decided.wait()
            stdin.write(self._decision)
        except OSError:
            pass  # the helper is gone: finish() says so
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def go(self) -> None:
        """The directories exist: the helpers write what they claim."""
        self._decision = _GO
        self._decided.set()

    def stop(self) -> None:
        """This process failed: the helpers stop wherever they are."""
        self._decided.set()  # with _STOP
        for process in self.processes:
            process.kill()  # also ends a feeder still writing the list
            process.wait()
        for feeder in self.feeders:
            feeder.join()
        for process in self.processes:
            if process.stdout is not None:
                process.stdout.close()

    def finish(self) -> None:
        """Wait for every helper; raise the first failure."""
        for feeder in self.feeders:
            feeder.join()
        failure: OutputError | None = None
        for process in self.processes:
            assert process.stdout is not None
            report = process.stdout.read()
            process.stdout.close()
            status = process.wait()
            try:
                result = json.loads(report)
            except ValueError:
                result = None
            if isinstance(result, dict) and isinstance(result.get("written"), int):
                self.written.append(result["written"])
            if failure is not None:
                continue
            if isinstance(result, dict) and "error" in result:
                failure = OutputError(str(result["error"]), str(result.get("hint", "")))
            elif status != 0 or not isinstance(result, dict):
                failure = OutputError(
                    f"cannot write into {self.root}: a writer process ended with status {status}",
                    "a negative status is the signal that ended it; an error it met is shown above",
                )
        if failure is not None:
            raise failure


def serve_files() -> None:
    """A helper process's main (see _Helpers): write the runs of files it claims."""
    # Ctrl-C is for the process that started this one, which then stops it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source = sys.stdin.buffer
    size = int.from_bytes(source.read(8), "big")
    root_fd, root, privileged, files, run_size, claims_fd = pickle.loads(source.read(size))
    if source.read(1) != _GO:
        return  # the sender failed before the directories were made
    result: dict[str, object]
    try:
        writer = _ChrootWriter(Path(root), privileged, root_fd)
        try:
            result = {"written": writer.add_claimed(files, run_size, _Claims.of(claims_fd))}
        finally:
            writer.close()
    except OutputError as err:
        result = {"error": err.message, "hint": err.hint}
    sys.stdout.buffer.write(json.dumps(result).encode())
