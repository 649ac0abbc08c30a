"""Store package scripts in the appliance, in the order first boot must run them.

No script runs at build time. Each is written under FIRSTBOOT_DIR/scripts and
listed in FIRSTBOOT_DIR/manifest: one tab-separated line per step, all
packages' scripts of a stage (e.g. every preinst) before the next stage, and
inside a stage the packages in dependency order (dependencies first).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import PurePosixPath

from supermin.entry import EntryKind, FileEntry
from supermin.packages import Package, PackageContents, Script
from supermin.spool import Spool

FIRSTBOOT_DIR = PurePosixPath("/usr/lib/supermin/firstboot")
MANIFEST_HEADER = "# step\tpackage\tversion\tphase\tinterpreter\targuments\tscript\n"
_UNSAFE = re.compile(r"[^A-Za-z0-9.+_-]")


def _steps(
    ordered: Sequence[tuple[Package, PackageContents]],
) -> list[tuple[Package, Script]]:
    steps = [(pkg, script) for pkg, contents in ordered for script in contents.scripts]
    position = {id(pkg): index for index, (pkg, _) in enumerate(ordered)}
    return sorted(steps, key=lambda step: (step[1].stage, position[id(step[0])]))


def firstboot_entries(
    ordered: Sequence[tuple[Package, PackageContents]], spool: Spool, mtime: int
) -> list[FileEntry]:
    """The script files and the manifest, as entries of their own layer."""
    entries: list[FileEntry] = []
    lines = [MANIFEST_HEADER]
    for number, (package, script) in enumerate(_steps(ordered), start=1):
        name = f"{number:04d}-{_UNSAFE.sub('_', package.name)}.{script.phase}"
        path = FIRSTBOOT_DIR / "scripts" / name
        content, size = spool.store([script.body])
        entries.append(
            FileEntry(
                path,
                EntryKind.FILE,
                0o755,
                mtime=mtime,
                size=size,
                origin="supermin",
                content=content,
            )
        )
        arguments = " ".join(shlex.quote(arg) for arg in script.arguments)
        lines.append(
            f"{number}\t{package.name}\t{package.version}\t{script.phase}\t"
            f"{script.interpreter}\t{arguments}\tscripts/{name}\n"
        )
    manifest, size = spool.store(["".join(lines).encode()])
    entries.append(
        FileEntry(
            FIRSTBOOT_DIR / "manifest",
            EntryKind.FILE,
            0o644,
            mtime=mtime,
            size=size,
            origin="supermin",
            content=manifest,
        )
    )
    return entries


def read_manifest(text: str) -> list[dict[str, str]]:
    """Parse a manifest back (used by tests and, later, by tools)."""
    keys = MANIFEST_HEADER.lstrip("# ").rstrip("\n").split("\t")
    return [
        dict(zip(keys, line.split("\t"), strict=True))
        for line in text.splitlines()
        if line and not line.startswith("#")
    ]
