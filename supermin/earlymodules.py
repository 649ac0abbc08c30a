"""The host kernel's modules, walked and copied into the ext2 image before the packages are read.

An ext2 appliance gets the host kernel's modules (~400 MB for Debian's kernel,
more than half of libguestfs's appliance). Which kernel is used is only
certain once the packages are read (a kernel among them wins), but the host's
is the usual answer, and what is decided without the packages is decided the
same way after them. So the build guesses it first: it walks its modules and
hands their files to the ext2 writer's early copies (outputs/ext2/early.py),
whose helper copies them while this process reads the packages. Afterwards,
`with_kernel_modules` uses the walk if the kernel is the one guessed (moved
if the modules land elsewhere than the host's /lib suggested); if not, it
walks again, and the writer frees the early copies nobody took.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from supermin.entry import EntryKind, FileEntry, clean_path
from supermin.errors import KernelError
from supermin.hostfiles.hostfs import HostFiles
from supermin.kernel import Kernel, KernelSearch, find_kernel, modules_place
from supermin.outputs.ext2 import EarlyCopies

# Below this much data the helper's start (~30 ms) is not paid back.
_WORTH_FROM = 64 << 20


@dataclass(frozen=True)
class ModulesWalk:
    directory: Path  # the modules directory on the build machine
    at: PurePosixPath  # where its entries are placed in the image
    entries: list[FileEntry]
    unreadable: list[str]


def walk_modules(directory: Path, at: PurePosixPath, host_root: Path) -> ModulesWalk:
    host = HostFiles(host_root)
    entries = host.tree(directory, at, "kernel")
    return ModulesWalk(directory, at, entries, host.unreadable)


def moved(walk: ModulesWalk, at: PurePosixPath) -> ModulesWalk:
    """The same walk placed at `at`: the appliance's /lib is not what the host's is."""
    depth = len(walk.at.parts)
    base = list(at.parts[1:])

    def move(path: PurePosixPath) -> PurePosixPath:
        return clean_path(PurePosixPath, [*base, *path.parts[depth:]])

    entries = [
        dataclasses.replace(
            entry,
            path=move(entry.path),
            # A hardlink names its first path, inside the walk too.
            target=str(move(PurePosixPath(entry.target)))
            if entry.kind is EntryKind.HARDLINK and entry.target
            else entry.target,
        )
        for entry in walk.entries
    ]
    unreadable = [str(move(PurePosixPath(path))) for path in walk.unreadable]
    return ModulesWalk(walk.directory, at, entries, unreadable)


@dataclass
class EarlyModules:
    walk: ModulesWalk
    copies: EarlyCopies


def start_early_modules(search: KernelSearch, image: Path, size: int) -> EarlyModules | None:
    """Walk the modules of the kernel the build will most likely use, and start
    copying them into `image`; None when there is no such kernel or too little."""
    try:
        kernel = find_kernel(search, [])
    except (KernelError, OSError):
        return None  # the build says so, with the packages' kernels considered
    if kernel.modules is None:
        return None
    walk = walk_modules(kernel.modules, _guess_place(kernel, search.host_root), search.host_root)
    if sum(entry.size for entry in walk.entries) < _WORTH_FROM:
        return None
    try:
        copies = EarlyCopies.start(image, size)
    except OSError:
        return None  # the writer reports it, in its own words, when it creates the image
    if copies is None:
        return None
    copies.offer(walk.entries)
    return EarlyModules(walk, copies)


def _guess_place(kernel: Kernel, host_root: Path) -> PurePosixPath:
    """Where the modules land, if the appliance's /lib is what the host's is (a
    symlink to usr/lib with merged /usr): the host's /lib/modules, resolved."""
    place = modules_place(kernel)
    root = os.path.realpath(host_root)
    real = os.path.realpath(os.path.join(root, "lib/modules"))
    if real != root and not real.startswith(root.rstrip("/") + "/"):
        return place
    inside = os.path.relpath(real, root)
    return PurePosixPath("/") / inside / place.name
