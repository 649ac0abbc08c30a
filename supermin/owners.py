"""Owners of package files, as numbers of the appliance's own /etc/passwd and /etc/group.

Archives name the owner of each file (tar headers also give a number, rpm headers
only the name). After the merge, the names of package files are looked up in the
appliance's /etc/passwd and /etc/group (DESIGN.md §4). A name those files do not
define is handled as each package manager does on a system that lacks it:
dpkg keeps the number of the tar header; rpm would use root, so the number the
backend gave stays (0, or the one Fedora and openSUSE fix for a few names) and
the name is recorded in FIRSTBOOT_DIR/owners. The first-boot runner sets those
owners once the package scripts, which create such users, have run.

Installed packages copied from the host, host files and the user's tarballs keep
the numbers they have: they already are the host's (or the tarball's) real ones.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from supermin.backends.registry import archive_has_owner_numbers
from supermin.content import read_content
from supermin.entry import EntryKind, FileEntry
from supermin.firstboot import FIRSTBOOT_DIR
from supermin.packages import Package, PackageContents
from supermin.report import Reporter
from supermin.spool import Spool

OWNERS_PATH = FIRSTBOOT_DIR / "owners"
OWNERS_HEADER = "# user\tgroup\tmode\tpath\n"
PASSWD = PurePosixPath("/etc/passwd")
GROUP = PurePosixPath("/etc/group")
# chown(2) clears these on a regular file: the runner sets the mode again.
_CLEARED_BY_CHOWN = 0o6000


@dataclass(frozen=True, slots=True)
class Accounts:
    """Name -> number, as /etc/passwd and /etc/group of the appliance define them."""

    users: Mapping[str, int]
    groups: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Fixup:
    """An owner name to set at first boot; "" where the build already set the right number."""

    path: PurePosixPath
    user: str
    group: str
    mode: int | None  # set again after the chown, which clears setuid/setgid


def parse_id_table(text: str) -> dict[str, int]:
    """NAME -> the third field, for passwd(5) and group(5) lines; the first line of a name wins.

    NIS compat lines (`+`, `-`) and lines without a number define nothing here.
    """
    table: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 3 or not fields[0] or fields[0][0] in "+-#":
            continue
        if fields[2].isdigit():
            table.setdefault(fields[0], int(fields[2]))
    return table


def read_accounts(entries: Sequence[FileEntry]) -> Accounts:
    """The accounts the merged entries' own /etc/passwd and /etc/group define (none: empty)."""
    tables: dict[str, dict[str, int]] = {str(PASSWD): {}, str(GROUP): {}}  # text: C hashes
    for entry in entries:
        path = str(entry.path)
        if path in tables and entry.kind is EntryKind.FILE and entry.content is not None:
            text = read_content(entry).decode("utf-8", "replace")
            tables[path] = parse_id_table(text)
    return Accounts(users=tables[str(PASSWD)], groups=tables[str(GROUP)])


def archive_origins(opened: Sequence[tuple[Package, PackageContents]]) -> dict[str, bool]:
    """Origin of each package read from an archive -> whether its archive has owner numbers.

    Installed packages are left out: their files were copied with the host's numbers.
    """
    return {
        package.name: archive_has_owner_numbers(package)
        for package, _ in opened
        if not package.installed
    }


def _resolve(name: str, table: Mapping[str, int], number: int) -> tuple[int, bool]:
    """(number, whether the name is missing); root and numeric names never are."""
    if name in table:
        return table[name], False
    if name == "root":
        return 0, False
    return number, not name.isdigit()


def resolve_owners(
    entries: Sequence[FileEntry], origins: Mapping[str, bool], accounts: Accounts
) -> tuple[list[FileEntry], list[Fixup]]:
    """Entries with their owners' numbers from `accounts`, and the names first boot must set.

    `origins` (from archive_origins) selects the entries to resolve; a missing
    name is recorded only for an origin whose archive has no numbers.
    """
    resolved: list[FileEntry] = []
    fixups: list[Fixup] = []
    for entry in entries:
        numbers = origins.get(entry.origin)
        if numbers is None or entry.origin == "supermin":
            resolved.append(entry)
            continue
        uid, user_missing = _resolve(entry.user, accounts.users, entry.uid)
        gid, group_missing = _resolve(entry.group, accounts.groups, entry.gid)
        if uid != entry.uid or gid != entry.gid:
            entry = dataclasses.replace(entry, uid=uid, gid=gid)
        resolved.append(entry)
        if not numbers and (user_missing or group_missing) and "\n" not in str(entry.path):
            special = entry.mode & _CLEARED_BY_CHOWN and entry.kind is not EntryKind.SYMLINK
            fixups.append(
                Fixup(
                    entry.path,
                    entry.user if user_missing else "",
                    entry.group if group_missing else "",
                    entry.mode if special else None,
                )
            )
    return resolved, fixups


def owners_text(fixups: Sequence[Fixup]) -> str:
    """The owners file: tab-separated user, group, octal mode, path ("" for nothing to do)."""
    lines = [OWNERS_HEADER]
    for fix in fixups:
        mode = f"{fix.mode:04o}" if fix.mode is not None else ""
        lines.append(f"{fix.user}\t{fix.group}\t{mode}\t{fix.path}\n")
    return "".join(lines)


def with_owners(
    entries: list[FileEntry],
    opened: Sequence[tuple[Package, PackageContents]],
    spool: Spool,
    mtime: int,
    report: Reporter,
) -> list[FileEntry]:
    """Merged `entries` with owners resolved, plus the owners file when first boot has work.

    The merged list is sorted by path components; the owners file is put in its place.
    """
    resolved, fixups = resolve_owners(entries, archive_origins(opened), read_accounts(entries))
    if not fixups:
        return resolved
    names = sorted({name for fix in fixups for name in (fix.user, fix.group) if name})
    report.info(
        f"{len(fixups)} files are owned by names no /etc/passwd or /etc/group of the "
        f"appliance defines yet ({', '.join(names)}): set at first boot"
    )
    owners = spool.file_entry(OWNERS_PATH, owners_text(fixups).encode(), 0o644, mtime)
    resolved = [e for e in resolved if e.path != OWNERS_PATH]
    bisect.insort(resolved, owners, key=lambda e: e.path.parts)
    return resolved
