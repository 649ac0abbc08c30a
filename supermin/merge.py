"""The one merge step between every source of entries and every output writer.

Layers are given lowest priority first (packages, host files, tarballs,
first-boot files): a later layer's entry replaces an earlier one at the same
path. The step then applies excludes, moves entries that sit under a
directory symlink to where that symlink leads (so `/lib/x` lands in `/usr/lib/x`
when `/lib -> usr/lib`, and nothing is ever written through a symlink),
gives each hardlink set one regular file first in path order, inserts missing
parent directories, clamps mtimes to SOURCE_DATE_EPOCH and sorts.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from supermin.entry import ROOT, EntryKind, FileEntry
from supermin.errors import ArchiveError

_MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True)
class Layer:
    entries: Iterable[FileEntry]
    excludable: bool = False  # excludefiles apply to package files only


def exclude_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """fnmatch without FNM_PATHNAME: `*` also matches `/`, as in supermin 5."""
    if not patterns:
        return lambda _path: False
    regex = re.compile("|".join(fnmatch.translate(p) for p in patterns))
    return lambda path: regex.match(path) is not None


def _join(base: PurePosixPath, target: str) -> list[str]:
    """Components of `target` taken from `base`, `..` clamped at the root like a chroot."""
    parts = [] if target.startswith("/") else list(base.parts[1:])
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return parts


class _Tree:
    def __init__(self) -> None:
        self.entries: dict[PurePosixPath, FileEntry] = {}
        self.rank: dict[PurePosixPath, int] = {}

    def put(self, entry: FileEntry, rank: int) -> None:
        if rank >= self.rank.get(entry.path, -1):
            self.entries[entry.path] = entry
            self.rank[entry.path] = rank

    def canonical(self, path: PurePosixPath) -> PurePosixPath:
        """`path` with every directory-symlink prefix replaced by what it points at."""
        pending = list(path.parts[1:])
        current = ROOT
        hops = 0
        while pending:
            part = pending.pop(0)
            candidate = current / part
            entry = self.entries.get(candidate)
            if pending and entry is not None and entry.kind is EntryKind.SYMLINK:
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise ArchiveError(f"too many levels of symbolic links resolving {path}")
                pending = _join(current, entry.target or "") + pending
                current = ROOT
                continue
            current = candidate
        return current


def _relocate(tree: _Tree) -> None:
    symlinks = {p for p, e in tree.entries.items() if e.kind is EntryKind.SYMLINK}
    if not symlinks:
        return
    moved: list[tuple[FileEntry, int]] = []
    for path in list(tree.entries):
        if any(parent in symlinks for parent in path.parents):
            entry = tree.entries.pop(path)
            moved.append((entry, tree.rank.pop(path)))
    for entry, rank in moved:
        new_path = tree.canonical(entry.path)
        tree.put(dataclasses.replace(entry, path=new_path), rank)
    for path, entry in list(tree.entries.items()):
        if entry.kind is EntryKind.HARDLINK and entry.target:
            target = str(tree.canonical(PurePosixPath(entry.target)))
            tree.entries[path] = dataclasses.replace(entry, target=target)


def _link_hardlinks(tree: _Tree, originals: dict[PurePosixPath, FileEntry]) -> None:
    groups: dict[PurePosixPath, list[PurePosixPath]] = {}
    for path, entry in tree.entries.items():
        if entry.kind is EntryKind.HARDLINK:
            groups.setdefault(PurePosixPath(entry.target or ""), []).append(path)
    for target, links in groups.items():
        source = tree.entries.get(target)
        if source is None or source.kind is not EntryKind.FILE:
            source = originals.get(target)  # excluded or replaced: keep the link's data
        if source is None or source.kind is not EntryKind.FILE:
            raise ArchiveError(
                f"hardlink {links[0]} points at {target}, which is not a regular file",
                f"the archive of {tree.entries[links[0]].origin} is corrupt or hostile",
            )
        members = sorted({*links, *([target] if target in tree.entries else [])})
        if target in tree.entries and tree.entries[target].kind is not EntryKind.FILE:
            members.remove(target)  # the path was replaced by something else
        first = members[0]
        tree.entries[first] = dataclasses.replace(source, path=first)
        for path in members[1:]:
            tree.entries[path] = dataclasses.replace(
                source,
                path=path,
                kind=EntryKind.HARDLINK,
                target=str(first),
                content=None,
                size=0,
            )


def _add_parents(tree: _Tree) -> None:
    for path in sorted(tree.entries, key=lambda p: p.parts):
        for parent in path.parents:
            existing = tree.entries.get(parent)
            if existing is None:
                child = tree.entries[path]
                tree.entries[parent] = FileEntry(
                    parent, EntryKind.DIR, 0o755, mtime=child.mtime, origin="supermin"
                )
            elif existing.kind is not EntryKind.DIR:
                raise ArchiveError(
                    f"{path} (from {tree.entries[path].origin}) needs {parent} to be a "
                    f"directory, but {existing.origin} makes it a {existing.kind}",
                    "remove one of the two from the appliance",
                )
            else:
                break  # its own parents were handled when it was seen


def merge(
    layers: Sequence[Layer], excludes: Sequence[str] = (), source_date_epoch: int | None = None
) -> list[FileEntry]:
    excluded = exclude_matcher(excludes)
    tree = _Tree()
    originals: dict[PurePosixPath, FileEntry] = {}
    for rank, layer in enumerate(layers):
        for entry in layer.entries:
            if entry.kind is EntryKind.FILE:
                originals.setdefault(entry.path, entry)
            if layer.excludable and excluded(str(entry.path)):
                continue
            tree.put(entry, rank)
    tree.entries.setdefault(ROOT, FileEntry(ROOT, EntryKind.DIR, 0o755, origin="supermin"))
    _relocate(tree)
    _link_hardlinks(tree, originals)
    _add_parents(tree)
    entries = sorted(tree.entries.values(), key=lambda e: e.path.parts)
    if source_date_epoch is not None:
        entries = [
            dataclasses.replace(e, mtime=source_date_epoch) if e.mtime > source_date_epoch else e
            for e in entries
        ]
    return entries
