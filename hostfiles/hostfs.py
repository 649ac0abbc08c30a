"""Describe files of the build host (or a --sysroot) as FileEntry records.

Used for host-mode packages (contents copied from the installed system, as
supermin 5 does) and for `hostfiles` globs. Hardlinked host files keep sharing
one inode in the appliance; files the builder cannot read are counted and
reported once instead of failing the build or being dropped silently.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import stat
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from supermin.entry import EntryKind, FileEntry, clean_path, image_components, kind_from_st_mode


@functools.cache
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@functools.cache
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _clean_components(directory: Path) -> list[str] | None:
    """The components of an absolute directory without "..", else None."""
    parts = directory.parts
    if not parts or parts[0] != "/" or ".." in parts:
        return None
    return list(parts[1:])


class HostFiles:
    def __init__(
        self, sysroot: Path = Path("/"), excluded: Callable[[str], bool] | None = None
    ) -> None:
        """`excluded`: the appliance's excludefiles (merge.exclude_matcher), which
        `entries` applies to package files before looking at them at all."""
        self.sysroot = sysroot
        self.excluded = excluded
        self.unreadable: list[str] = []
        self._inodes: dict[tuple[int, int], PurePosixPath] = {}
        self._root = _clean_components(sysroot)

    def host_path(self, image: PurePosixPath) -> Path:
        return self.sysroot / str(image).lstrip("/")

    def entries(self, names: Iterable[str], origin: str) -> list[FileEntry]:
        """Entries for the paths an installed package owns, as the host has them now.

        Paths the host no longer has (deleted docs, path-excluded files) are skipped,
        as supermin 5 does; the root itself is never copied from a package list.
        So are the paths the appliance excludes: merge would drop them from a
        package's files anyway, and in libguestfs's appliance they are two thirds
        of the installed packages' 20,000 paths (documentation, manuals, locales).
        The result is the same: a file kept elsewhere through a hardlink then
        simply has its first kept path as its file, which merge would make it.
        """
        found = []
        sysroot = str(self.sysroot)
        root = self._root
        excluded = self.excluded
        for name in names:
            components = image_components(name)
            if not components:
                continue
            if excluded is not None and excluded("/" + "/".join(components)):
                continue
            image = clean_path(PurePosixPath, components)
            if root is None:
                host = os.path.join(sysroot, *components)
                entry = self._entry(host, None, image, origin)
            else:
                host_components = [*root, *components]
                host = "/" + "/".join(host_components)
                entry = self._entry(host, host_components, image, origin)
            if entry is not None:
                found.append(entry)
        return found

    def entry(self, image: PurePosixPath, origin: str) -> FileEntry | None:
        """The entry for `image` as the host has it, or None if it does not exist."""
        return self._entry(str(self.host_path(image)), None, image, origin)

    def tree(self, host_dir: Path, image_dir: PurePosixPath, origin: str) -> list[FileEntry]:
        """Entries for a whole host directory (e.g. a kernel's modules) placed at `image_dir`.

        Symlinks inside are kept as symlinks, never followed.
        """
        found: list[FileEntry] = []
        host_base = _clean_components(host_dir)
        image_base = list(image_dir.parts[1:])
        top_dir = str(host_dir)
        for top, dirs, files in os.walk(host_dir, onerror=lambda e: self._walk_error(e)):
            dirs.sort()
            # Components, not pathlib joins: per file those cost more than the lstat.
            relative = [] if top == top_dir else top[len(top_dir) :].strip("/").split("/")
            host_top = None if host_base is None else [*host_base, *relative]
            image_top = [*image_base, *relative]
            top_entry = self._entry(top, host_top, clean_path(PurePosixPath, image_top), origin)
            if top_entry is not None:
                found.append(top_entry)
            for name in [
                *sorted(files),
                *(d for d in dirs if os.path.islink(os.path.join(top, d))),
            ]:
                entry = self._entry(
                    os.path.join(top, name),
                    None if host_top is None else [*host_top, name],
                    clean_path(PurePosixPath, [*image_top, name]),
                    origin,
                )
                if entry is not None:
                    found.append(entry)
        return found

    def _walk_error(self, error: OSError) -> None:
        self.unreadable.append(str(error.filename))

    def _entry(
        self, host: str, host_components: list[str] | None, image: PurePosixPath, origin: str
    ) -> FileEntry | None:
        """`host` described as `image`; `host_components` are host's own if it is clean."""
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            return None
        except PermissionError:
            self.unreadable.append(str(image))
            return None
        kind = kind_from_st_mode(st.st_mode)
        target: str | None = None
        content: Path | None = None
        size = 0
        if kind is EntryKind.SYMLINK:
            target = os.readlink(host)
        elif kind is EntryKind.FILE:
            # Readable by others (nearly every system file): anyone may read it,
            # no need to ask the kernel again.
            if not st.st_mode & stat.S_IROTH and not os.access(host, os.R_OK):
                self.unreadable.append(str(image))
                return None
            key = (st.st_dev, st.st_ino)
            first = self._inodes.setdefault(key, image) if st.st_nlink > 1 else image
            if first != image:
                kind, target = EntryKind.HARDLINK, str(first)
            else:
                size = st.st_size
                if host_components is None:
                    content = Path(host)
                else:
                    content = clean_path(Path, host_components)
        return FileEntry(
            path=image,
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            user=_user(st.st_uid),
            group=_group(st.st_gid),
            mtime=int(st.st_mtime),
            size=size,
            target=target,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev))
            if kind in (EntryKind.CHAR, EntryKind.BLOCK)
            else (0, 0),
            origin=origin,
            content=content,
        )
