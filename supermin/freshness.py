"""`--if-newer` done right: skip a build only when nothing that shapes the output changed.

supermin 5 compares mtimes of the input directory, which misses package updates
and rebuilds forever when clocks or copies disagree. Here a fingerprint covers
the inputs' contents, the package sources (indexes, archives, or the installed
package database), the kernel candidates, the `SUPERMIN_*` variables and the
options; it is stored beside the output after a successful build.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from supermin import __version__

_SOURCE_FILES = (".deb", ".rpm")
_INDEX_PREFIXES = ("Packages", "repomd.xml")
_INSTALLED_DATABASES = ("var/lib/dpkg/status", "var/lib/rpm", "usr/lib/sysimage/rpm")
_KERNEL_PLACES = ("boot", "lib/modules")


def stamp_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.supermin-stamp")


def _identity(digest: hashlib._Hash, path: Path) -> None:
    try:
        st = path.stat()
    except OSError:
        digest.update(f"{path}\0missing\n".encode())
        return
    digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())


def _walk(top: Path, wanted: Iterable[str] = ()) -> list[Path]:
    """Files under `top` (all, or those whose names end/start as `wanted` says), sorted."""
    if top.is_file():
        return [top]
    keep = tuple(wanted)
    found = []
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            if not keep or name.endswith(keep) or name.startswith(keep):
                found.append(Path(root) / name)
    return found


# Variables that change where supermin keeps things or what it says, never the output.
_NOT_SHAPING = frozenset({"SUPERMIN_CACHE_DIR", "SUPERMIN_DEBUG"})


def fingerprint(
    inputs: Sequence[Path],
    repos: Sequence[Path],
    sysroot: Path,
    options: Sequence[str],
    environ: Mapping[str, str],
) -> str:
    digest = hashlib.sha256(f"supermin {__version__}\n".encode())
    for directory in inputs:
        for path in _walk(directory):
            digest.update(f"{path.name}\0".encode() + hashlib.sha256(path.read_bytes()).digest())
    for repo in repos:
        for path in _walk(repo, (*_SOURCE_FILES, *_INDEX_PREFIXES)):
            _identity(digest, path)
    if not repos:
        for database in _INSTALLED_DATABASES:
            for path in _walk(sysroot / database) if (sysroot / database).exists() else []:
                _identity(digest, path)
    for place in _KERNEL_PLACES:
        top = sysroot / place
        for path in _walk(top, ("vmlinuz",)) if top.is_dir() else []:
            _identity(digest, path)
    for name in sorted(environ):
        if name in _NOT_SHAPING:
            continue
        if name.startswith("SUPERMIN_") or name == "SOURCE_DATE_EPOCH":
            digest.update(f"{name}={environ[name]}\n".encode())
    digest.update("\0".join(options).encode())
    return digest.hexdigest()


def is_fresh(output: Path, print_: str) -> bool:
    try:
        return output.exists() and stamp_path(output).read_text() == print_
    except OSError:
        return False


def record(output: Path, print_: str) -> None:
    stamp = stamp_path(output)
    partial = stamp.with_name(stamp.name + ".new")
    partial.write_text(print_)
    os.replace(partial, stamp)
