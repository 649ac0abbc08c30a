"""A dpkg database for an appliance built from .deb archives (DESIGN.md §7).

It records every package of the closure as dpkg leaves it after unpacking
(`install ok unpacked`): the status stanza from the package's own control
file, `info/PKG.list` with the paths the package ships, and every control
member (md5sums, conffiles, maintainer scripts, triggers, shlibs…) under
`info/`, named as dpkg names them (`PKG:ARCH.*` for Multi-Arch: same). First
boot then runs the preinsts, which dpkg runs at unpack, and lets
`dpkg --configure -a` do the rest: postinsts in dpkg's order, and triggers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import PurePosixPath

from supermin.content import Content
from supermin.entry import EntryKind, FileEntry
from supermin.packages import Package, PackageContents, PackageDatabase, Script
from supermin.spool import Pack, Spool

ADMINDIR = PurePosixPath("/var/lib/dpkg")
INFODIR = ADMINDIR / "info"

# The order dpkg writes a status stanza in (lib/dpkg/parse.c fieldinfos); fields
# it does not know (Homepage, Built-Using…) follow in the control file's order.
STATUS_ORDER = (
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Description",
    "Triggers-Pending",
    "Triggers-Awaited",
)
# What a status stanza never takes from a .deb's control file.
_DROPPED = {"status", "conffiles", "config-version", "filename", "size", "md5sum"}
_SCRIPTS = {"preinst", "postinst", "prerm", "postrm", "config"}
# dpkg itself, at first boot: every unpacked package configured, triggers run.
CONFIGURE = Script("configure", 2, b"", ("--configure", "-a"), "/usr/bin/dpkg", standalone=True)


def control_fields(text: bytes) -> list[tuple[str, str]]:
    """(name, raw value with continuation lines) of the first stanza of a control file."""
    fields: list[tuple[str, str]] = []
    for line in text.decode("utf-8", errors="surrogateescape").splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t" and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value}\n{line}")
        elif ":" in line and not line.startswith("#"):
            name, value = line.split(":", 1)
            fields.append((name.strip(), value.strip()))
    return fields


def _field(fields: Sequence[tuple[str, str]], name: str) -> str:
    return next((value for key, value in fields if key.lower() == name.lower()), "")


def info_name(fields: Sequence[tuple[str, str]]) -> str:
    """How dpkg names the package's info files: `pkg:arch` only for Multi-Arch: same."""
    name = _field(fields, "Package")
    if _field(fields, "Multi-Arch").lower() == "same":
        return f"{name}:{_field(fields, 'Architecture')}"
    return name


def _md5(entry: FileEntry) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    content = Content.of(entry)
    for block in content.chunks() if content is not None else ():
        digest.update(block)
    return digest.hexdigest()


def _conffile_hashes(contents: PackageContents) -> list[tuple[str, str]]:
    """(path, md5 of the shipped content) of each conffile, as dpkg records them."""
    listed = contents.control_files.get("conffiles", b"").decode(errors="replace").splitlines()
    if not listed:
        return []  # most packages: no index of their paths to build
    files = {e.path: e for e in contents.entries}
    result = []
    for line in listed:
        words = line.split()
        if not words or words[0] == "remove-on-upgrade" or not words[-1].startswith("/"):
            continue  # a conffile to remove on upgrade is not shipped
        entry = files.get(PurePosixPath(words[-1]))
        if entry is not None and entry.kind is EntryKind.HARDLINK and entry.target:
            entry = files.get(PurePosixPath(entry.target))
        if entry is None or entry.kind is not EntryKind.FILE:
            result.append((words[-1], "newconffile"))  # dpkg's mark for "none yet"
        else:
            result.append((words[-1], _md5(entry)))
    return result


def status_stanza(
    contents: PackageContents, control: Sequence[tuple[str, str]] | None = None
) -> str:
    """The package's stanza in dpkg's status file; `control`: its control fields, if parsed."""
    if control is None:
        control = control_fields(contents.control_files["control"])
    fields = [(name, value) for name, value in control if name.lower() not in _DROPPED]
    fields.append(("Status", "install ok unpacked"))
    conffiles = _conffile_hashes(contents)
    if conffiles:
        fields.append(("Conffiles", "".join(f"\n {path} {md5}" for path, md5 in conffiles)))
    rank = {name.lower(): index for index, name in enumerate(STATUS_ORDER)}
    ordered = sorted(
        enumerate(fields), key=lambda item: (rank.get(item[1][0].lower(), len(rank)), item[0])
    )
    return "".join(
        f"{name}:{value}\n" if value.startswith("\n") else f"{name}: {value}\n"
        for _, (name, value) in ordered
    )


def file_list(contents: PackageContents) -> str:
    """dpkg's PKG.list: `/.`, then every path of the data archive, in archive order."""
    lines = ["/."]
    # Compared as text: a PurePosixPath("/") made for each of ~15,000 entries
    # was most of the database's time.
    lines.extend(path for e in contents.entries if (path := str(e.path)) != "/")
    return "\n".join(lines) + "\n"


def _trigger_interests(
    name: str, contents: PackageContents, files: list[str], named: dict[str, list[str]]
) -> None:
    """Register the package's `interest` directives as dpkg does when it unpacks."""
    text = contents.control_files.get("triggers", b"").decode(errors="replace")
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) != 2 or not words[0].startswith("interest"):
            continue
        who = name + ("/noawait" if words[0] == "interest-noawait" else "")
        if words[1].startswith("/"):
            files.append(f"{words[1]} {who}\n")
        else:
            named.setdefault(words[1], []).append(f"{who}\n")


def wanted(ordered: Sequence[tuple[Package, PackageContents]]) -> bool:
    """A database only for .deb archives (never host-installed packages) holding dpkg."""
    return any(p.name == "dpkg" for p, _ in ordered) and all(
        not p.installed and "control" in c.control_files for p, c in ordered
    )


def dpkg_database(
    ordered: Sequence[tuple[Package, PackageContents]], spool: Spool, mtime: int
) -> PackageDatabase | None:
    if not wanted(ordered):
        return None
    with spool.pack() as pack:  # a thousand small files: one spool file, not a create each
        entries = _database_entries(ordered, pack, mtime)
    dpkg = next(p for p, _ in ordered if p.name == "dpkg")
    return PackageDatabase(entries, kept_phases=frozenset({"preinst"}), steps=[(dpkg, CONFIGURE)])


def _database_entries(
    ordered: Sequence[tuple[Package, PackageContents]], pack: Pack, mtime: int
) -> list[FileEntry]:
    entries: list[FileEntry] = []

    def add(path: PurePosixPath, data: bytes | None, mode: int = 0o644) -> None:
        if data is None:
            entries.append(FileEntry(path, EntryKind.DIR, 0o755, mtime=mtime, origin="supermin"))
            return
        entries.append(pack.file_entry(path, data, mode, mtime))

    for directory in ("", "info", "updates", "triggers", "alternatives", "parts"):
        add(ADMINDIR / directory, None)
    stanzas: list[tuple[str, str, str]] = []
    file_triggers: list[str] = []
    named_triggers: dict[str, list[str]] = {}
    arches: list[str] = []
    for _, contents in ordered:
        fields = control_fields(contents.control_files["control"])
        name = info_name(fields)
        arch = _field(fields, "Architecture")
        if arch != "all" and arch not in arches:
            arches.append(arch)
        stanzas.append((_field(fields, "Package"), arch, status_stanza(contents, fields)))
        add(INFODIR / f"{name}.list", file_list(contents).encode())
        for member, data in sorted(contents.control_files.items()):
            if member != "control":
                add(INFODIR / f"{name}.{member}", data, 0o755 if member in _SCRIPTS else 0o644)
        _trigger_interests(name, contents, file_triggers, named_triggers)
    stanzas.sort()
    add(ADMINDIR / "status", "\n".join(text for _, _, text in stanzas).encode())
    add(INFODIR / "format", b"1\n")  # info files of Multi-Arch: same packages are PKG:ARCH.*
    for name in ("available", "diversions", "statoverride"):
        add(ADMINDIR / name, b"")
    if len(arches) > 1:  # foreign architectures: what `dpkg --add-architecture` writes
        native = next((p.arch for p, _ in ordered if p.name == "dpkg"), arches[0])
        add(ADMINDIR / "arch", "".join(f"{a}\n" for a in dict.fromkeys([native, *arches])).encode())
    add(ADMINDIR / "triggers" / "File", "".join(file_triggers).encode())
    add(ADMINDIR / "triggers" / "Unincorp", b"")
    for trigger, interested in sorted(named_triggers.items()):
        add(ADMINDIR / "triggers" / trigger, "".join(interested).encode())
    return entries
