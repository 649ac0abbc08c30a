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
import heapq
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from supermin.entry import ROOT, EntryKind, FileEntry, clean_path
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


def _join(base: list[str], target: str) -> list[str]:
    """Components of `target` taken from `base`, `..` clamped at the root like a chroot."""
    parts = [] if target.startswith("/") else list(base)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return parts


def _in_path_order(text: str) -> str:
    """A sort key putting image paths in PurePosixPath.parts order ("/a/b" before "/a-b").

    Comparing the components one by one is comparing the text with "/" made the
    smallest character, NUL, which no path holds: one string per path instead
    of a list (the merge's two sorts of 13,000 paths took 3x longer that way).
    """
    return text.replace("/", "\0")


class _Tree:
    """The entries by their path as text.

    Text, not PurePosixPath: a path's __hash__ and __eq__ are Python methods,
    called some five times an entry by the merge, where a string's are C.
    """

    def __init__(self) -> None:
        self.entries: dict[str, FileEntry] = {}
        self.rank: dict[str, int] = {}

    def put(self, entry: FileEntry, rank: int, key: str | None = None) -> bool:
        """Place `entry` (at `key`, its path as text) unless a higher layer has its path."""
        if key is None:
            key = str(entry.path)
        if rank >= self.rank.get(key, -1):
            self.entries[key] = entry
            self.rank[key] = rank
            return True
        return False


def _canonical(
    links: dict[str, str], parts: list[str], path: object, *, follow_last: bool = False
) -> str:
    """The path of `parts` with every directory-symlink prefix replaced by what it points at.

    `links` maps each symlink's image path to its target. With `follow_last` the
    last component is followed too (the directory a child of it lives in) and
    the root comes back as "". Works on strings: this runs for every entry under
    a symlinked directory, and pathlib objects per component cost most of the merge.
    """
    pending = parts
    current: list[str] = []
    key = ""
    hops = 0
    i = 0
    while i < len(pending):
        part = pending[i]
        i += 1
        candidate = f"{key}/{part}"
        target = links.get(candidate) if follow_last or i < len(pending) else None
        if target is not None:
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                raise ArchiveError(f"too many levels of symbolic links resolving {path}")
            pending = _join(current, target) + pending[i:]
            current, key, i = [], "", 0
            continue
        current.append(part)
        key = candidate
    return key if follow_last else key or "/"


def _under(path: str, dirs: set[str], memo: dict[str, bool]) -> bool:
    """Whether one of the proper ancestors of the image path `path` is in `dirs`.

    `memo` remembers the answer per directory: siblings share their ancestors.
    """
    unknown: list[str] = []  # ancestors not yet in memo, nearest first (no recursion: deep trees)
    found = False
    while path != "/":
        path = path[: path.rfind("/")] or "/"
        known = memo.get(path)
        if known is not None:
            found = known
            break
        unknown.append(path)
    for ancestor in reversed(unknown):
        found = memo[ancestor] = found or ancestor in dirs
    return found


def _relocate(tree: _Tree) -> None:
    links = {p: e.target or "" for p, e in tree.entries.items() if e.kind is EntryKind.SYMLINK}
    if not links:
        return
    symlinks = set(links)
    memo: dict[str, bool] = {}
    moved: list[tuple[FileEntry, int]] = []
    for path in list(tree.entries):
        if _under(path, symlinks, memo):
            entry = tree.entries.pop(path)
            links.pop(path, None)
            moved.append((entry, tree.rank.pop(path)))
    # The last component is never followed, so an entry's new path is its
    # directory's resolution plus its name; that holds until `links` changes.
    resolved: dict[str, list[str]] = {}  # directory -> the components of its resolution
    for entry, rank in moved:
        directory, _, name = str(entry.path).rpartition("/")
        where = resolved.get(directory)
        if where is None:
            parts = [part for part in directory.split("/") if part]
            key = _canonical(links, parts, entry.path, follow_last=True)
            where = resolved[directory] = key.split("/")[1:]
        new_path = clean_path(PurePosixPath, [*where, name])
        if tree.put(dataclasses.replace(entry, path=new_path), rank):
            # Later lookups see the tree as it is now, as a lookup in tree.entries would.
            was = links.get(str(new_path))
            now = entry.target or "" if entry.kind is EntryKind.SYMLINK else None
            if now != was:
                resolved.clear()
                if now is None:
                    del links[str(new_path)]
                else:
                    links[str(new_path)] = now
    for path, entry in list(tree.entries.items()):
        if entry.kind is EntryKind.HARDLINK and entry.target:
            target_path = PurePosixPath(entry.target)
            target = _canonical(links, list(target_path.parts[1:]), target_path)
            if target != entry.target:
                tree.entries[path] = dataclasses.replace(entry, target=target)


def _link_hardlinks(tree: _Tree, originals: dict[str, FileEntry]) -> None:
    groups: dict[str, list[str]] = {}
    for path, entry in tree.entries.items():
        if entry.kind is EntryKind.HARDLINK:
            groups.setdefault(str(PurePosixPath(entry.target or "")), []).append(path)
    for target, links in groups.items():
        source = tree.entries.get(target)
        if source is None or source.kind is not EntryKind.FILE:
            source = originals.get(target)  # excluded or replaced: keep the link's data
        if source is None or source.kind is not EntryKind.FILE:
            raise ArchiveError(
                f"hardlink {links[0]} points at {target}, which is not a regular file",
                f"the archive of {tree.entries[links[0]].origin} is corrupt or hostile",
            )
        members = sorted(
            {*links, *([target] if target in tree.entries else [])}, key=_in_path_order
        )
        if target in tree.entries and tree.entries[target].kind is not EntryKind.FILE:
            members.remove(target)  # the path was replaced by something else
        first = members[0]
        tree.entries[first] = dataclasses.replace(source, path=tree.entries[first].path)
        for path in members[1:]:
            tree.entries[path] = dataclasses.replace(
                source,
                path=tree.entries[path].path,
                kind=EntryKind.HARDLINK,
                target=first,
                content=None,
                size=0,
            )


def _add_parents(tree: _Tree) -> list[str]:
    """Give every entry its missing parent directories; the paths, sorted, after that."""
    # Nearly every entry's parent is already a directory: check that on strings
    # and build parent paths only for the rest.
    dirs = {p for p, e in tree.entries.items() if e.kind is EntryKind.DIR}
    order = sorted(tree.entries, key=_in_path_order)
    count = len(order)
    for text in order:
        if text != "/" and (text[: text.rfind("/")] or "/") in dirs:
            continue
        child = tree.entries[text]
        for parent in child.path.parents:
            key = str(parent)
            existing = tree.entries.get(key)
            if existing is None:
                tree.entries[key] = FileEntry(
                    parent, EntryKind.DIR, 0o755, mtime=child.mtime, origin="supermin"
                )
                dirs.add(key)
            elif existing.kind is not EntryKind.DIR:
                raise ArchiveError(
                    f"{text} (from {child.origin}) needs {parent} to be a "
                    f"directory, but {existing.origin} makes it a {existing.kind}",
                    "remove one of the two from the appliance",
                )
            else:
                break  # its own parents were handled when it was seen
    return order if len(tree.entries) == count else sorted(tree.entries, key=_in_path_order)


def merge(
    layers: Sequence[Layer], excludes: Sequence[str] = (), source_date_epoch: int | None = None
) -> list[FileEntry]:
    excluded = exclude_matcher(excludes)
    tree = _Tree()
    originals: dict[str, FileEntry] = {}
    for rank, layer in enumerate(layers):
        for entry in layer.entries:
            key = str(entry.path)
            if entry.kind is EntryKind.FILE:
                originals.setdefault(key, entry)
            if layer.excludable and excluded(key):
                continue
            tree.put(entry, rank, key)
    tree.entries.setdefault("/", FileEntry(ROOT, EntryKind.DIR, 0o755, origin="supermin"))
    _relocate(tree)
    _link_hardlinks(tree, originals)
    entries = [tree.entries[path] for path in _add_parents(tree)]
    if source_date_epoch is not None:
        entries = [
            dataclasses.replace(e, mtime=source_date_epoch) if e.mtime > source_date_epoch else e
            for e in entries
        ]
    return entries


def lands_at(entries: Iterable[FileEntry], path: PurePosixPath) -> PurePosixPath:
    """Where merge puts an entry at `path`, given the symlinks among `entries`.

    The directories leading to it are followed (`/lib/modules/x` lands in
    `/usr/lib/modules/x` when `/lib -> usr/lib`), its last component is not.
    """
    links = {str(e.path): e.target or "" for e in entries if e.kind is EntryKind.SYMLINK}
    return PurePosixPath(_canonical(links, list(path.parts[1:]), path))


def merge_subtree(
    entries: list[FileEntry],
    subtree: Sequence[FileEntry],
    at: PurePosixPath,
    source_date_epoch: int | None = None,
) -> list[FileEntry]:
    """`merge([Layer(entries), Layer(subtree)], (), source_date_epoch)`, in a fraction of the time.

    `entries` is merge's output; `subtree` a directory's entries (a kernel's
    modules) placed at `at`, which `lands_at` gave. When nothing of `entries`
    is at or below `at`, the subtree is merged alone and spliced into
    `entries` at its place in the order, instead of merging the whole tree
    again. Otherwise (or if `at` was not where it lands, or a hardlink leaves
    the subtree, or a parent is not a directory) the full merge decides, and
    raises what it raises.
    """
    if not subtree:
        return entries
    top = str(at)
    inside = top.rstrip("/") + "/"
    plain = all(
        (text == top or text.startswith(inside))
        and (e.kind is not EntryKind.HARDLINK or (e.target or "").startswith(inside))
        for e in subtree
        for text in (str(e.path),)
    )
    # One pass over the tree: its symlinks (for where `at` lands), anything
    # already at or under `at`, and the directories above it.
    links: dict[str, str] = {}
    above = {str(parent) for parent in at.parents}
    present: dict[PurePosixPath, FileEntry] = {}
    for entry in entries if plain else ():
        text = str(entry.path)
        if text == top or text.startswith(inside):
            plain = False
            break
        if entry.kind is EntryKind.SYMLINK:
            links[text] = entry.target or ""
        if text in above:
            present[entry.path] = entry
    if plain and _canonical(links, list(at.parts[1:]), at) == top:
        added: list[FileEntry] = []
        for entry in merge([Layer(subtree)], (), source_date_epoch):
            existing = present.get(entry.path)
            if existing is None:
                added.append(entry)
            elif existing.kind is not EntryKind.DIR:
                break  # a parent that is not a directory: the full merge says so
        else:
            return list(heapq.merge(entries, added, key=lambda e: e.path.parts))
    return merge([Layer(entries), Layer(subtree)], (), source_date_epoch)
