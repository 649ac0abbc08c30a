"""A small on-disk cache of parsed metadata, keyed by the inputs' identity.

A key is built from the (path, size, mtime, inode) of every file the value was
computed from, so a changed index or archive is re-parsed and an unchanged
one is loaded from a pickle. A cache that cannot be written (an unprivileged
user without a home, a read-only disk) is silently skipped: it only saves time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar, cast

T = TypeVar("T")
_FORMAT = 2  # bump when what is pickled changes shape


def cache_dir() -> Path | None:
    explicit = os.environ.get("SUPERMIN_CACHE_DIR")
    if explicit is not None:
        return Path(explicit) if explicit else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "supermin"


def file_identity(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256(str(_FORMAT).encode())
    for path in paths:
        st = path.stat()
        # The inode too: a file replaced by another of the same size and mtime is told apart.
        identity = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0"
        digest.update(identity.encode())
    return digest.hexdigest()[:32]


class _Corrupt(Exception):
    """A stored value failed its checksum or did not unpickle: recomputed, never used."""


def _load(path: Path) -> object:
    # A sha256 of the pickle leads the file: a damaged byte that still
    # unpickles would otherwise hand back a wrong value.
    stored = path.read_bytes()
    checksum, pickled = stored[:32], stored[32:]
    if hashlib.sha256(pickled).digest() != checksum:
        raise _Corrupt(path)
    try:
        value: object = pickle.loads(pickled)
    except Exception as err:  # unpickling fails in many ways; any of them is a miss
        raise _Corrupt(path) from err
    return value


def _mark_used(path: Path) -> None:
    """Move the mtime to now: `supermin --prune-cache` removes what was unused for long."""
    with contextlib.suppress(OSError):  # another user's pickle in a shared cache
        os.utime(path)


def holds_any(kind: str) -> bool:
    """Whether the cache holds a value of `kind` under any key (False without a cache)."""
    directory = cache_dir()
    if directory is None:
        return False
    try:
        return any(directory.glob(f"{kind}-*.pickle"))
    except OSError:
        return False


def cached(
    kind: str, key: str, compute: Callable[[], T], valid: Callable[[object], bool] | None = None
) -> T:
    """The stored value of `kind` under `key`, else `compute()`'s, stored.

    `valid`, when given, also judges a stored value: one it refuses is
    recomputed and overwritten, like a damaged one.
    """
    directory = cache_dir()
    if directory is None:
        return compute()
    path = directory / f"{kind}-{key}.pickle"
    try:
        loaded = _load(path)
        if valid is not None and not valid(loaded):
            raise _Corrupt(path)
        _mark_used(path)
        return cast(T, loaded)
    except (OSError, _Corrupt):
        pass
    value = compute()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{kind}-")
        pickled = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(fd, "wb") as out:
            out.write(hashlib.sha256(pickled).digest() + pickled)
        os.replace(tmp, path)
    except OSError:
        pass
    return value
