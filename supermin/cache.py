"""A small on-disk cache of parsed metadata, keyed by the inputs' identity.

A key is built from the (path, size, mtime) of every file the value was
computed from, so a changed index or archive is re-parsed and an unchanged
one is loaded from a pickle. A cache that cannot be written (an unprivileged
user without a home, a read-only disk) is silently skipped: it only saves time.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_FORMAT = 1  # bump when what is pickled changes shape


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
        digest.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:32]


def cached(kind: str, key: str, compute: Callable[[], T]) -> T:
    directory = cache_dir()
    if directory is None:
        return compute()
    path = directory / f"{kind}-{key}.pickle"
    try:
        with path.open("rb") as stored:
            value: T = pickle.load(stored)
            return value
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        pass
    value = compute()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{kind}-")
        with os.fdopen(fd, "wb") as out:
            pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        pass
    return value
