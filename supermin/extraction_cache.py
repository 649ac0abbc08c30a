"""Opened packages kept on disk, keyed by the archive's checksum.

A rebuild after one package changed then decompresses that one package: the
others are loaded from `<cache>/extract/<key[:2]>/<key>/`, which holds

    data/NNNNNNNN     the member contents (mode 0444), numbered
    contents.pickle   the PackageContents, content paths relative to the entry
    manifest          JSON, written last: the pickle's sha256, each blob's size and mtime

An entry is built in a temporary directory and renamed into place in one
step, so a concurrent build sees a whole entry or none; when two builds race,
the first rename wins and the other discards its copy.

What a load checks, and why not more: the manifest must parse and name this
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
import errno
import hashlib
import json
import os
import pickle
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from supermin import __version__
from supermin.kernelcopy import copy_file
from supermin.packages import Package, PackageContents, PackageReader

# Bump when what an entry holds changes shape, or when a reader's output for
# the same archive changes (the version below covers releases, not checkouts).
FORMAT = 2
_MANIFEST = "manifest"
_PICKLE = "contents.pickle"
_DATA = "data"
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_DAY = 86400.0


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
        entry = self.root / key[:2] / key
        try:
            contents = _load(entry, key)
        except FileNotFoundError:
            pass
        except (OSError, _Broken):
            _remove(entry)
        else:
            self._count(hit=True)
            _touch(entry)
            return contents
        self._count(hit=False)
        contents = reader.open(package)
        # The cache only saves time: a full disk or a read-only one is no error.
        with contextlib.suppress(OSError):
            self._store(entry, key, contents)
        return contents

    def _count(self, *, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def _store(self, entry: Path, key: str, contents: PackageContents) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=self.root))
        try:
            relative, blobs = _copy_blobs(contents, temp / _DATA)
            pickled = pickle.dumps(relative, protocol=pickle.HIGHEST_PROTOCOL)
            (temp / _PICKLE).write_bytes(pickled)
            manifest = {
                "format": FORMAT,
                "key": key,
                "pickle_sha256": hashlib.sha256(pickled).hexdigest(),
                "blobs": blobs,
            }
            (temp / _MANIFEST).write_text(json.dumps(manifest))
            entry.parent.mkdir(exist_ok=True)
            try:
                os.rename(temp, entry)
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # A concurrent build stored the same archive first: keep its entry.
        finally:
            if temp.exists():
                _remove_tree(temp)


def _copy_blobs(
    contents: PackageContents, data: Path
) -> tuple[PackageContents, list[tuple[int, int]]]:
    """Link (or copy) each content file into `data`; contents pointing there, relatively."""
    data.mkdir()
    numbers: dict[Path, Path] = {}
    blobs: list[tuple[int, int]] = []
    entries = []
    for entry in contents.entries:
        if entry.content is None:
            entries.append(entry)
            continue
        name = numbers.get(entry.content)
        if name is None:
            name = Path(_DATA, f"{len(numbers):08d}")
            numbers[entry.content] = name
            target = data.parent / name
            _link_or_copy(entry.content, target)
            os.chmod(target, 0o444)
            st = os.stat(target)
            blobs.append((st.st_size, st.st_mtime_ns))
        entries.append(dataclasses.replace(entry, content=name))
    return dataclasses.replace(contents, entries=entries), blobs


def _link_or_copy(source: Path, target: Path) -> None:
    # The spool sits beside the output, the cache under $XDG_CACHE_HOME: on one
    # file system a link is free. Across btrfs subvolumes (Fedora's / and /home)
    # link(2) is refused but the kernel's copy shares the blocks; elsewhere it
    # copies, in the kernel.
    try:
        os.link(source, target)
    except OSError:
        copy_file(source, target)


def _load(entry: Path, key: str) -> PackageContents:
    """The stored contents with absolute content paths; FileNotFoundError when absent."""
    try:
        manifest = json.loads((entry / _MANIFEST).read_text())
    except FileNotFoundError:
        if entry.exists():
            raise _Broken("no manifest") from None
        raise
    except (ValueError, UnicodeDecodeError) as err:
        raise _Broken("unreadable manifest") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _Broken("another format")
    if manifest.get("key") != key:
        raise _Broken("another key")
    try:
        pickled = (entry / _PICKLE).read_bytes()
    except FileNotFoundError:
        raise _Broken("no pickle") from None
    if hashlib.sha256(pickled).hexdigest() != manifest.get("pickle_sha256"):
        raise _Broken("pickle changed")
    try:
        contents = pickle.loads(pickled)
    except Exception as err:  # unpickling can fail in many ways; any of them is a miss
        raise _Broken("pickle unreadable") from err
    if not isinstance(contents, PackageContents):
        raise _Broken("not a PackageContents")
    _check_blobs(entry, manifest.get("blobs"))
    return _rebased(contents, entry)


def _check_blobs(entry: Path, blobs: object) -> None:
    if not isinstance(blobs, list):
        raise _Broken("no blob list")
    try:
        names = os.listdir(entry / _DATA)
    except OSError:
        raise _Broken("no data directory") from None
    if len(names) != len(blobs):
        raise _Broken("blobs added or missing")
    for number, recorded in enumerate(blobs):
        try:
            st = os.stat(entry / _DATA / f"{number:08d}")
        except FileNotFoundError:
            raise _Broken("blob missing") from None
        if not stat.S_ISREG(st.st_mode) or [st.st_size, st.st_mtime_ns] != recorded:
            raise _Broken("blob changed")


def _rebased(contents: PackageContents, entry: Path) -> PackageContents:
    entries = [
        e if e.content is None else dataclasses.replace(e, content=entry / e.content)
        for e in contents.entries
    ]
    return dataclasses.replace(contents, entries=entries)


def _touch(entry: Path) -> None:
    """Mark the entry used now, for pruning."""
    # Another user's entry in a shared cache cannot be touched: it may be pruned early.
    with contextlib.suppress(OSError):
        os.utime(entry)


def _remove(entry: Path) -> None:
    """Take a broken entry away (best effort), out of sight first so no build reads half of it."""
    trash = entry.with_name(f"{_TRASH_PREFIX}{entry.name}-{os.getpid()}-{threading.get_ident()}")
    try:
        os.rename(entry, trash)
    except OSError:
        return  # gone already, or not ours to remove: the new entry then stays unstored
    _remove_tree(trash)


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
    for fan in _listdir(root):
        if fan.name.startswith((_TEMP_PREFIX, _TRASH_PREFIX)):
            _prune_one(fan, stale, pruned)
        elif fan.is_dir():
            for entry in _listdir(fan):
                leftover = entry.name.startswith((_TEMP_PREFIX, _TRASH_PREFIX))
                _prune_one(entry, stale if leftover else unused, pruned)
    for path in _listdir(directory):
        if path.is_file() and path.name.endswith(".pickle"):
            _prune_one(path, unused, pruned)
        elif path.is_file() and path.name.startswith("."):  # cache.py's unfinished writes
            _prune_one(path, stale, pruned)
    return pruned


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
