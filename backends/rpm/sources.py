"""Find rpm packages: a tree of .rpm files, an rpm-md repository, or an rpm database.

The kind of source is detected from what the path holds, never configured:
a directory with repodata/repomd.xml is a repository (its primary.xml is
parsed, filelists.xml only when needed, see `repodata`), any other directory
is searched for binary .rpm files (headers only; source rpms are skipped),
and a single .rpm file is a source of one package. Parsed metadata is cached
(supermin.cache) under the identity of the files it came from.

Every `Package` carries an `RpmMeta` (see `metadata`) as `meta`; its
`version` is the EVR as rpm prints it, ``[epoch:]version-release`` with the
epoch left out when it is 0 or absent, as dnf does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from supermin.backends.rpm.header import (
    NotAnRpm,
    PackageFormatError,
    Tag,
    file_paths,
    package_header,
    read_headers,
)
from supermin.backends.rpm.metadata import (
    DEPENDENCY_KINDS,
    FileLists,
    Record,
    RpmMeta,
    Triple,
    bulk_allocation,
    header_record,
)
from supermin.backends.rpm.repodata import REPOMD, load_primary
from supermin.cache import cached, file_identity
from supermin.errors import ArchiveError, SourceError
from supermin.packages import Package

# Where rpm keeps its database inside a root: Fedora >= 36 and RHEL >= 10 (with
# /var/lib/rpm a symlink to it), everyone else, and Debian's rpm's own default,
# ~/.rpmdb, where a Debian dnf --installroot puts it unless ~/.rpmmacros says
# otherwise (then under the installing user's home, inside the root). The path is
# always given to rpm explicitly, since the host's default may be any of these.
RPMDB_PATHS = ("usr/lib/sysimage/rpm", "var/lib/rpm", "root/.rpmdb")
_RPMDB_FILES = ("rpmdb.sqlite", "Packages", "Packages.db", "Index.db")


def evr_text(epoch: int | None, version: str, release: str) -> str:
    text = f"{epoch}:{version}" if epoch else version
    return f"{text}-{release}" if release else text


def _package(meta: RpmMeta, source: str, location: Path | None, installed: bool) -> Package:
    return Package(
        name=meta.name,
        version=evr_text(meta.epoch, meta.version, meta.release),
        arch=meta.arch,
        format="rpm",
        source=source,
        location=location,
        installed=installed,
        meta=meta,
    )


def packagelist_name(package: Package) -> str:
    """NEVRA, `name-[epoch:]version-release.arch` without a zero epoch, as supermin 5 lists it."""
    return package.nva  # the version is evr_text's, which already leaves out epoch 0


# ---------------------------------------------------------------- .rpm files


def _raise(err: OSError) -> None:
    raise SourceError(f"cannot read package source {err.filename}: {err.strerror}")


def _rpm_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for top, dirs, files in os.walk(directory, onerror=_raise):
        dirs.sort()
        found.extend(
            Path(top) / name
            for name in sorted(files)
            if name.endswith(".rpm") and not name.endswith((".src.rpm", ".nosrc.rpm"))
        )
    return found


def read_record(path: Path) -> Record:
    """The metadata of one .rpm, from its header (the payload is not read)."""
    try:
        with path.open("rb") as raw:
            header = read_headers(raw)
            meta = package_header(header, file_paths(header))
            flags = header.integers(Tag.FILEFLAGS)
    except OSError as err:
        raise ArchiveError(f"cannot read {path}: {err.strerror}") from None
    except NotAnRpm as err:
        raise ArchiveError(f"{path}: not an RPM package ({err})") from None
    except PackageFormatError as err:
        raise ArchiveError(f"{path}: corrupt or truncated RPM ({err})") from None
    if len(flags) != len(meta.files):
        flags = ()
    return header_record(meta, tuple(flags), str(path.absolute()))


def _binary_records(paths: list[Path]) -> list[Record]:
    return [record for record in map(read_record, paths) if record[5] is not None]


def load_rpm_files(directory: Path) -> list[Package]:
    """Every binary .rpm below `directory` (source rpms are not packages to install)."""
    paths = _rpm_files(directory)
    records = cached("rpm-pool", file_identity(paths), lambda: _binary_records(paths))
    source = str(directory)
    return [_package(RpmMeta(r), source, Path(r[9]), False) for r in records]


# ---------------------------------------------------------------- repositories


def load_rpm_repository(directory: Path) -> list[Package]:
    with bulk_allocation():
        records, filelists = load_primary(directory)
        base = directory.absolute()
        source = str(directory)
        lists: FileLists | None = filelists
        return [
            _package(RpmMeta(r, lists), source, base / r[9] if r[9] else None, False)
            for r in records
            if r[5] is not None
        ]


def load_rpm_source(path: Path) -> list[Package]:
    """Detect what `path` is (repository, tree of .rpm files, one .rpm) and list its packages."""
    if path.is_file() and path.suffix == ".rpm":
        return [_package(RpmMeta(read_record(path)), str(path), path.absolute(), False)]
    if not path.is_dir():
        raise SourceError(
            f"package source {path} is neither a directory nor an .rpm",
            "check the --repo argument",
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise SourceError(f"cannot read package source {path}: permission denied")
    if (path / REPOMD).is_file():
        return load_rpm_repository(path)
    return load_rpm_files(path)


# ---------------------------------------------------------------- the rpm database

# One package per record: fields split by US, records by RS, array entries by GS.
_US, _RS, _GS = "\x1f", "\x1e", "\x1d"
_TAGS = {
    "provides": "PROVIDE",
    "requires": "REQUIRE",
    "conflicts": "CONFLICT",
    "obsoletes": "OBSOLETE",
    "recommends": "RECOMMEND",
    "suggests": "SUGGEST",
    "supplements": "SUPPLEMENT",
    "enhances": "ENHANCE",
}


def _query_format() -> str:
    fields = [
        "%{NAME}",
        "%|EPOCH?{%{EPOCH}}:{}|",
        "%{VERSION}",
        "%{RELEASE}",
        "%{ARCH}",
        "%|SOURCERPM?{%{SOURCERPM}}:{}|",
    ]
    for kind in DEPENDENCY_KINDS:
        tag = _TAGS[kind]
        fields.append(f"[%{{{tag}NAME}}{_GS}%{{{tag}FLAGS}}{_GS}%{{{tag}VERSION}}{_GS}]")
    fields.append(f"[%{{FILENAMES}}{_GS}%{{FILEFLAGS}}{_GS}]")
    return _US.join(fields) + _RS


def _triples(text: str) -> tuple[Triple, ...]:
    items = text.split(_GS)[:-1]
    return tuple(
        (items[i], int(items[i + 1]), items[i + 2] if items[i + 2] != "(none)" else "")
        for i in range(0, len(items) - 2, 3)
    )


def _installed_record(text: str) -> Record | None:
    fields = text.split(_US)
    if len(fields) != 6 + len(DEPENDENCY_KINDS) + 1:
        raise SourceError(f"unexpected output of rpm -qa: {text[:80]!r}")
    name, epoch, version, release, arch, source_rpm = fields[:6]
    if name == "gpg-pubkey":
        return None  # imported signing keys are recorded as pseudo packages
    files = fields[-1].split(_GS)[:-1]
    return (
        name,
        int(epoch) if epoch else None,
        version,
        release,
        arch,
        source_rpm,
        tuple(_triples(field) for field in fields[6:-1]),
        tuple(files[0::2]),
        tuple(int(flags) for flags in files[1::2]),
        "",
    )


def _database_paths() -> list[str]:
    home = os.path.expanduser("~/.rpmdb").lstrip("/")
    return list(dict.fromkeys([*RPMDB_PATHS, home]))


def rpm_database(sysroot: Path) -> str | None:
    """The database path (as rpm --dbpath wants it, inside `sysroot`) holding packages."""
    for relative in _database_paths():
        directory = sysroot / relative
        if any((directory / name).is_file() for name in _RPMDB_FILES):
            return "/" + relative
    return None


def _query_installed(sysroot: Path, dbpath: str) -> list[Record]:
    rpm = shutil.which("rpm")
    if rpm is None:
        raise SourceError(
            "cannot list the installed rpm packages: the rpm program is missing",
            "install rpm, or pass --repo PATH",
        )
    command = [rpm, "--root", str(sysroot), "--dbpath", dbpath, "-qa", "--qf", _query_format()]
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.run(command, capture_output=True, env=env, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SourceError(
            f"rpm cannot read the database in {sysroot}{dbpath}: "
            + (message[-1] if message else f"exit status {proc.returncode}")
        )
    output = proc.stdout.decode("utf-8", "surrogateescape")
    records = [_installed_record(text) for text in output.split(_RS)[:-1]]
    return sorted((r for r in records if r is not None), key=lambda r: (r[0], r[4]))


def load_rpm_installed(sysroot: Path) -> list[Package]:
    """The packages installed in `sysroot`, read through the host's rpm program."""
    dbpath = rpm_database(sysroot)
    if dbpath is None:
        looked = ", ".join(str(sysroot / relative) for relative in _database_paths())
        raise SourceError(
            f"no rpm database in {looked}",
            "pass --repo PATH to build from package archives instead",
        )
    database = sysroot / dbpath.lstrip("/")
    inputs = sorted(p for p in database.iterdir() if p.is_file())
    records = cached(
        "rpm-installed", file_identity(inputs), lambda: _query_installed(sysroot, dbpath)
    )
    source = str(database)
    return [_package(RpmMeta(r), source, None, True) for r in records]
