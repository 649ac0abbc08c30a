"""Opened packages kept on disk, keyed by the archive's checksum.

A rebuild after one package changed then decompresses that one package: the
others are loaded from `<cache>/extract/`, which holds for each entry

    <key>                 the record: a JSON line (format, key, the pickle's
                          sha256, each blob's name, size and mtime), then the
                          pickled PackageContents, content paths as blob names
    <key>.<tag>.<n>       the member contents (mode 0444), one blob per spool
                          file, <tag> told apart per store

Files only, no directory per entry: on ext4 without a journal a new inode is
found by stepping over the recently deleted ones one by one, and directories
cost most. Storing the 226 entries of a cold build right after the previous
cache was deleted took 0.30-0.46 s with a directory per entry (two or three new
directories and two files each), 0.13-0.14 s as files.

An entry's blobs are linked (or copied) under its own tag first; the record
is then linked into place in one step, so a concurrent build sees a whole
entry or none; when two builds race, the first link wins and the other
removes its blobs (on a file system without hard links the record is renamed
into place, and the last store wins).

What a load checks, and why not more: the record must parse and name this
format and key, the pickle must match its sha256 and unpickle, and every
blob must exist with the recorded size and mtime. That catches a missing or
truncated file, a damaged pickle and any blob rewritten in place (a write
moves its mtime). It does not catch a blob altered while its mtime is put
back, or bit rot on the disk: hashing every blob on each load would read as
many bytes as decompressing did, which is the work the cache exists to
save. An entry that fails a check is removed and rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supermin import __version__
from supermin.kernelcopy import copy_file
from supermin.packages import Package, PackageContents, PackageReader

# Bump when what an entry holds changes shape, or when a reader's output for
# the same archive changes (the version below covers releases, not checkouts).
FORMAT = 3
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_DAY = 86400.0
_RECORD = re.compile(r"[0-9a-f]{64}")
_BLOB = re.compile(r"([0-9a-f]{64})\.[0-9a-f]{8}\.[0-9]+")


class _Broken(Exception):
    """An entry failed a check on load: a miss, and the entry goes."""


def archive_key(package: Package, reader: PackageReader) -> str:
    """The sha256 of the archive with everything else that shapes the opened contents."""
    assert package.location is not None
    with package.location.open("rb") as archive:
        digest = hashlib.file_digest(archive, "sha256")
    # Entries carry origin=package.name; the reader's class says which format read it.
    kind = f"{type(reader).__module__}.{type(reader).__qualname__}"
    context = f"{FORMAT}\0{__version__}\0{kind}\0{package.name}\0"
    return hashlib.sha256(context.encode() + digest.digest()).hexdigest()


class ExtractionCache:
    """Opens packages through the cache; safe to call from several threads at once."""

    def __init__(self, directory: Path) -> None:
        self.root = directory / "extract"
        self._lock = threading.Lock()  # guards the counters only
        self.hits = 0
        self.misses = 0

    @classmethod
    def at(cls, directory: Path | None) -> ExtractionCache | None:
        """A cache under `directory`, or None when caching is off or it cannot be written."""
        if directory is None:
            return None
        cache = cls(directory)
        try:
            cache.root.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return cache if os.access(cache.root, os.W_OK | os.X_OK) else None

    def summary(self) -> str:
        return f"extraction cache {self.root}: {self.hits} hits, {self.misses} misses"

    def open(self, package: Package, reader: PackageReader) -> PackageContents:
        if package.installed or package.location is None:
            return reader.open(package)
        try:
            key = archive_key(package, reader)
        except OSError:
            return reader.open(package)  # missing or unreadable: the reader says so properly
        try:
            contents = _load(self.root, key)
        except FileNotFoundError:
            pass
        except (OSError, _Broken):
            _remove(self.root, key)
        else:
            self._count(hit=True)
            _touch(self.root / key)
            return contents
        self._count(hit=False)
        contents = reader.open(package)
        # The cache only saves time: a full disk or a read-only one is no error.
        with contextlib.suppress(OSError):
            self._store(key, contents)
        return contents

    def _count(self, *, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def _store(self, key: str, contents: PackageContents) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tag = os.urandom(4).hex()
        made: list[Path] = []
        temp = self.root / f"{_TEMP_PREFIX}{key}.{tag}"
        try:
            names, blobs = _link_blobs(contents, self.root, f"{key}.{tag}", made)
            pickled = _pickled_relative(contents, names)
            header = {
                "format": FORMAT,
                "key": key,
                "pickle_sha256": hashlib.sha256(pickled).hexdigest(),
                "blobs": blobs,
            }
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
            with os.fdopen(fd, "wb") as record:
                record.write(json.dumps(header).encode() + b"\n" + pickled)
            try:
                os.link(temp, self.root / key)
            except FileExistsError:
                # A concurrent build stored the same archive first: keep its entry.
                return
            except OSError:
                # A file system without hard links: the last store wins instead.
                os.replace(temp, self.root / key)
            made.clear()
        finally:
            for path in (*made, temp):
                with contextlib.suppress(OSError):
                    os.unlink(path)


def _link_blobs(
    contents: PackageContents, root: Path, prefix: str, made: list[Path]
) -> tuple[dict[Path, str], list[tuple[str, int, int]]]:
    """Link (or copy) each content file to `root/prefix.N`: (content file -> blob name, blobs).

    Every blob made is appended to `made` as soon as it exists, for the caller to remove.
    """
    names: dict[Path, str] = {}
    blobs: list[tuple[str, int, int]] = []
    for entry in contents.entries:
        if entry.content is None or entry.content in names:
            continue
        name = names[entry.content] = f"{prefix}.{len(names)}"
        target = root / name
        _link_or_copy(entry.content, target)
        made.append(target)
        os.chmod(target, 0o444)
        st = os.stat(target)
        blobs.append((name, st.st_size, st.st_mtime_ns))
    return names, blobs


class _RelativePickler(pickle.Pickler):
    """Pickles content files as the names of their blobs, as a load expects them.

    Instead of a copy of every entry with its content replaced (dataclasses.replace,
    half the time a store took): the entries' content paths are a handful of
    objects, each met here once and remembered by the pickle after that.
    """

    def __init__(self, file: io.BytesIO, names: dict[Path, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._names = names

    def reducer_override(self, obj: object) -> Any:
        if type(obj) is _CONCRETE_PATH:  # never an entry's path (a PurePosixPath)
            name = self._names.get(obj)
            if name is not None:
                return _CONCRETE_PATH, (name,)
        return NotImplemented


_CONCRETE_PATH = type(Path())


def _pickled_relative(contents: PackageContents, names: dict[Path, str]) -> bytes:
    """`contents` pickled with each content file named by its blob, relative to the cache."""
    buffer = io.BytesIO()
    _RelativePickler(buffer, names).dump(contents)
    return buffer.getvalue()


def _link_or_copy(source: Path, target: Path) -> None:
    # The spool sits beside the output, the cache under $XDG_CACHE_HOME: on one
    # file system a link is free. Across btrfs subvolumes (Fedora's / and /home)
    # link(2) is refused but the kernel's copy shares the blocks; elsewhere it
    # copies, in the kernel.
    try:
        os.link(source, target)
    except OSError:
        copy_file(source, target)


def _read_record(record: Path) -> tuple[dict[str, object], bytes]:
    """The record's header and pickle; FileNotFoundError when absent, _Broken when unreadable."""
    data = record.read_bytes()
    line, _, pickled = data.partition(b"\n")
    try:
        header = json.loads(line)
    except (ValueError, UnicodeDecodeError) as err:
        raise _Broken("unreadable record") from err
    if not isinstance(header, dict):
        raise _Broken("unreadable record")
    return header, pickled


def _load(root: Path, key: str) -> PackageContents:
    """The stored contents with absolute content paths; FileNotFoundError when absent."""
    header, pickled = _read_record(root / key)
    if header.get("format") != FORMAT:
        raise _Broken("another format")
    if header.get("key") != key:
        raise _Broken("another key")
    if hashlib.sha256(pickled).hexdigest() != header.get("pickle_sha256"):
        raise _Broken("pickle changed")
    try:
        contents = pickle.loads(pickled)
    except Exception as err:  # unpickling can fail in many ways; any of them is a miss
        raise _Broken("pickle unreadable") from err
    if not isinstance(contents, PackageContents):
        raise _Broken("not a PackageContents")
    _check_blobs(root, key, header.get("blobs"))
    return _rebased(contents, root)


def _check_blobs(root: Path, key: str, blobs: object) -> None:
    if not isinstance(blobs, list):
        raise _Broken("no blob list")
    for recorded in blobs:
        if not (isinstance(recorded, list) and len(recorded) == 3):
            raise _Broken("unreadable blob list")
        name, size, mtime = recorded
        found = _BLOB.fullmatch(name) if isinstance(name, str) else None
        if found is None or found[1] != key:
            raise _Broken("a blob of another entry")
        try:
            st = os.stat(root / name)
        except FileNotFoundError:
            raise _Broken("blob missing") from None
        if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (size, mtime):
            raise _Broken("blob changed")


def _rebased(contents: PackageContents, root: Path) -> PackageContents:
    entries = [
        e if e.content is None else dataclasses.replace(e, content=root / e.content)
        for e in contents.entries
    ]
    return dataclasses.replace(contents, entries=entries)


def _touch(record: Path) -> None:
    """Mark the entry used now, for pruning."""
    # Another user's entry in a shared cache cannot be touched: it may be pruned early.
    with contextlib.suppress(OSError):
        os.utime(record)


def _remove(root: Path, key: str, blobs: list[Path] | None = None) -> None:
    """Take an entry away (best effort): its record out of sight first, so no
    build reads half of it, then every blob of its key (`blobs`, if listed).

    A store of the same key under way in another build may lose its blobs
    too: its record then fails the check on load and is rebuilt.
    """
    trash = root / f"{_TRASH_PREFIX}{key}-{os.getpid()}-{threading.get_ident()}"
    try:
        os.rename(root / key, trash)
    except FileNotFoundError:
        pass  # blobs without a record: a store cut short
    except OSError:
        return  # not ours to remove: the new entry then stays unstored
    for path in (trash, *(_blobs_of(root, key) if blobs is None else blobs)):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _blobs_of(root: Path, key: str) -> list[Path]:
    return [path for path in _listdir(root) if path.name.startswith(f"{key}.")]


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- pruning


@dataclass(slots=True)
class Pruned:
    """What a prune took away: entries (directories or files) and their bytes."""

    removed: int = 0
    freed: int = 0  # bytes


def prune(directory: Path, days: float, now: float | None = None) -> Pruned:
    """Remove extraction entries and pickles unused for `days`, and leftovers older than a day."""
    now = time.time() if now is None else now
    unused = now - days * _DAY
    stale = now - _DAY
    pruned = Pruned()
    root = directory / "extract"
    names = [path.name for path in _listdir(root)]
    blobs: dict[str, list[Path]] = {}
    for name in names:
        if found := _BLOB.fullmatch(name):
            blobs.setdefault(found[1], []).append(root / name)
    records = {name for name in names if _RECORD.fullmatch(name)}
    for name in names:
        path = root / name
        if name in records:
            _prune_entry(root, name, blobs.get(name, []), unused, pruned)
        elif found := _BLOB.fullmatch(name):
            if found[1] not in records:  # left by a store cut short
                _prune_one(path, stale, pruned)
        elif name.startswith((_TEMP_PREFIX, _TRASH_PREFIX)):
            _prune_one(path, stale, pruned)
        elif path.is_dir() and not path.is_symlink():  # an older format's fan of entries
            for entry in _listdir(path):
                leftover = entry.name.startswith((_TEMP_PREFIX, _TRASH_PREFIX))
                _prune_one(entry, stale if leftover else unused, pruned)
            with contextlib.suppress(OSError):
                path.rmdir()  # once empty
    for path in _listdir(directory):
        if path.is_file() and path.name.endswith(".pickle"):
            _prune_one(path, unused, pruned)
        elif path.is_file() and path.name.startswith("."):  # cache.py's unfinished writes
            _prune_one(path, stale, pruned)
    return pruned


def _prune_entry(root: Path, key: str, blobs: list[Path], before: float, pruned: Pruned) -> None:
    """A record unused since `before` goes with its blobs, as one entry."""
    try:
        if (root / key).lstat().st_mtime >= before:
            return
    except OSError:
        return
    size = sum(_size(path) for path in (root / key, *blobs) if path.exists())
    _remove(root, key, blobs)
    if not os.path.lexists(root / key):
        pruned.removed += 1
        pruned.freed += size


def _listdir(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except OSError:
        return []


def _prune_one(path: Path, before: float, pruned: Pruned) -> None:
    try:
        st = path.lstat()
    except OSError:
        return
    if st.st_mtime >= before:
        return
    size = _size(path)
    if stat.S_ISDIR(st.st_mode):
        _remove_tree(path)
    else:
        try:
            path.unlink()
        except OSError:
            return
    if not os.path.lexists(path):
        pruned.removed += 1
        pruned.freed += size


def _size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(top, name)).st_size
    return total
