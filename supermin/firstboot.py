"""Store package scripts in the appliance, in the order first boot must run them.

No script runs at build time. Each is written under FIRSTBOOT_DIR/scripts and
listed in FIRSTBOOT_DIR/manifest: one tab-separated line per step, all
packages' scripts of a stage (e.g. every preinst) before the next stage, and
inside a stage the packages in dependency order (dependencies first).
When the backend writes the package manager's own database, the manifest keeps
only the scripts that manager would have run while unpacking, and ends with
the backend's steps (for dpkg: `dpkg --configure -a`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import PurePosixPath

from supermin.entry import FileEntry
from supermin.packages import Package, PackageContents, PackageDatabase, Script
from supermin.spool import Spool

FIRSTBOOT_DIR = PurePosixPath("/usr/lib/supermin/firstboot")
MANIFEST_HEADER = "# step\tpackage\tversion\tphase\tinterpreter\targuments\tscript\n"
_UNSAFE = re.compile(r"[^A-Za-z0-9.+_-]")


def _steps(
    ordered: Sequence[tuple[Package, PackageContents]],
    database: PackageDatabase | None = None,
) -> list[tuple[Package, Script]]:
    steps = [(pkg, script) for pkg, contents in ordered for script in contents.scripts]
    if database is not None:  # the package manager runs the rest itself
        steps = [step for step in steps if step[1].phase in database.kept_phases]
    position = {id(pkg): index for index, (pkg, _) in enumerate(ordered)}
    steps.sort(key=lambda step: (step[1].stage, position[id(step[0])]))
    return steps + list(database.steps if database is not None else ())


def firstboot_entries(
    ordered: Sequence[tuple[Package, PackageContents]],
    spool: Spool,
    mtime: int,
    database: PackageDatabase | None = None,
) -> list[FileEntry]:
    """The script files and the manifest, as entries of their own layer.

    With a package manager's `database`, only its kept phases' scripts are
    steps, followed by the database's own steps (e.g. `dpkg --configure -a`).
    A standalone step has no script file: its script column is empty.
    """
    entries: list[FileEntry] = []
    lines = [MANIFEST_HEADER]
    for number, (package, script) in enumerate(_steps(ordered, database), start=1):
        name = f"{number:04d}-{_UNSAFE.sub('_', package.name)}.{script.phase}"
        arguments = " ".join(shlex.quote(arg) for arg in script.arguments)
        if script.standalone:
            lines.append(
                f"{number}\t{package.name}\t{package.version}\t{script.phase}\t"
                f"{script.interpreter}\t{arguments}\t\n"
            )
            continue
        path = FIRSTBOOT_DIR / "scripts" / name
        entries.append(spool.file_entry(path, script.body, 0o755, mtime))
        lines.append(
            f"{number}\t{package.name}\t{package.version}\t{script.phase}\t"
            f"{script.interpreter}\t{arguments}\tscripts/{name}\n"
        )
    entries.append(
        spool.file_entry(FIRSTBOOT_DIR / "manifest", "".join(lines).encode(), 0o644, mtime)
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
