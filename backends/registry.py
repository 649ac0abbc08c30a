"""Pick the backend for the package sources and build one package universe.

Each source's format is detected from what the path holds (DESIGN.md §2); an
appliance is made of one format, so sources of two formats are refused.
Without --repo the installed packages of the sysroot are used: dpkg's
database if there is one, else rpm's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from supermin.backends.deb.repository import DebRepository
from supermin.backends.deb.sources import DPKG_STATUS, load_installed, load_source, native_arch
from supermin.errors import SourceError
from supermin.hostfiles.hostfs import HostFiles
from supermin.packages import (
    Package,
    PackageContents,
    PackageDatabase,
    PackageReader,
    Repository,
)
from supermin.spool import Spool

# The archive readers, the dpkg database writer and the rpm backend are imported
# where they are used: `prepare` needs none of them for a Debian universe, and
# their imports (libarchive, rpmfile, zstandard) are a third of its start-up.


@dataclass
class Universe:
    format: str  # "deb" or "rpm"
    repository: Repository
    count: int  # how many packages the sources offer
    description: str

    def reader(self, spool: Spool, host: HostFiles) -> PackageReader:
        if self.format == "rpm":
            from supermin.backends.rpm.reader import RpmReader

            return RpmReader(spool, host)
        from supermin.backends.deb.reader import DebReader

        return DebReader(spool, host)

    def database(
        self, opened: Sequence[tuple[Package, PackageContents]], spool: Spool, mtime: int
    ) -> PackageDatabase | None:
        """The package manager's database for the appliance, if the backend writes one."""
        if self.format != "deb":
            return None
        from supermin.backends.deb.dpkgdb import dpkg_database

        return dpkg_database(opened, spool, mtime)


def packagelist_name(package: Package) -> str:
    """How `--include-packagelist` names a package: its format's own spelling."""
    if package.format == "rpm":
        from supermin.backends.rpm.sources import packagelist_name as rpm_name

        return rpm_name(package)
    from supermin.backends.deb.sources import packagelist_name as deb_name

    return deb_name(package)


# Whether a format's archives carry owner numbers beside the names (tar headers
# do; rpm headers name owners only).
_OWNER_NUMBERS = {"deb": True, "rpm": False}


def archive_has_owner_numbers(package: Package) -> bool:
    return _OWNER_NUMBERS.get(package.format, False)


def source_format(path: Path) -> str:
    """ "rpm" or "deb", from what `path` holds."""
    if path.is_file():
        return "rpm" if path.suffix == ".rpm" else "deb"
    if (path / "repodata" / "repomd.xml").is_file():
        return "rpm"
    for _top, _dirs, files in os.walk(path):
        for name in files:
            if name.endswith(".rpm"):
                return "rpm"
            if name.endswith(".deb") or name.startswith("Packages"):
                return "deb"
    return "deb"


def _check_readable(repo: Path) -> None:
    if not repo.exists():
        raise SourceError(f"package source {repo} does not exist", "check --repo")
    if not os.access(repo, os.R_OK | (os.X_OK if repo.is_dir() else 0)):
        raise SourceError(f"cannot read package source {repo}: permission denied")


def _repos_format(repos: Sequence[Path]) -> str:
    formats = set()
    for repo in repos:
        _check_readable(repo)
        formats.add(source_format(repo))
    if len(formats) > 1:
        raise SourceError(
            "the package sources mix .deb and .rpm packages",
            "build one appliance from one distribution's packages",
        )
    return formats.pop()


def open_universe(
    repos: Sequence[Path],
    sysroot: Path = Path("/"),
    host_cpu: str | None = None,
    weak_deps: bool = False,
) -> Universe:
    """All packages the given sources offer; the installed ones when there is no --repo."""
    if repos:
        kind = _repos_format(repos)
        description = ", ".join(str(repo) for repo in repos)
    else:
        kind = "deb" if (sysroot / DPKG_STATUS).is_file() else "rpm"
        description = f"the packages installed in {sysroot}"
    repository: Repository
    if kind == "rpm":
        from supermin.backends.rpm.repository import RpmRepository
        from supermin.backends.rpm.sources import load_rpm_installed, load_rpm_source

        packages = (
            [p for repo in repos for p in load_rpm_source(repo)]
            if repos
            else load_rpm_installed(sysroot)
        )
        count = len(packages)
        repository = RpmRepository(packages, native_arch(host_cpu), weak_deps=weak_deps)
    else:
        catalogues = (
            [c for repo in repos for c in load_source(repo)] if repos else [load_installed(sysroot)]
        )
        count = sum(len(c) for c in catalogues)
        repository = DebRepository(catalogues, native_arch(host_cpu))
    if not count:
        raise SourceError(f"no packages found in {description}", "check the --repo paths")
    return Universe(kind, repository, count, description)


def list_drivers(sysroot: Path = Path("/")) -> list[tuple[str, bool]]:
    """Each package format, and whether the sysroot has its installed-package database."""
    rpm_databases = ("var/lib/rpm", "usr/lib/sysimage/rpm")
    return [
        ("deb", (sysroot / DPKG_STATUS).is_file()),
        ("rpm", any((sysroot / place).is_dir() for place in rpm_databases)),
    ]
