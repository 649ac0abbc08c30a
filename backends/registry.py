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

from supermin.backends.deb.dpkgdb import dpkg_database
from supermin.backends.deb.reader import DebReader
from supermin.backends.deb.repository import DebRepository
from supermin.backends.deb.sources import DPKG_STATUS, load_installed, load_source, native_arch
from supermin.backends.rpm.reader import RpmReader
from supermin.backends.rpm.repository import RpmRepository
from supermin.backends.rpm.sources import load_rpm_installed, load_rpm_source
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


@dataclass
class Universe:
    format: str  # "deb" or "rpm"
    repository: Repository
    packages: list[Package]
    description: str

    def reader(self, spool: Spool, host: HostFiles) -> PackageReader:
        if self.format == "rpm":
            return RpmReader(spool, host)
        return DebReader(spool, host)

    def database(
        self, opened: Sequence[tuple[Package, PackageContents]], spool: Spool, mtime: int
    ) -> PackageDatabase | None:
        """The package manager's database for the appliance, if the backend writes one."""
        return dpkg_database(opened, spool, mtime) if self.format == "deb" else None


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


def _from_repos(repos: Sequence[Path]) -> tuple[str, list[Package]]:
    formats = set()
    packages: list[Package] = []
    for repo in repos:
        _check_readable(repo)
        kind = source_format(repo)
        formats.add(kind)
        packages.extend(load_rpm_source(repo) if kind == "rpm" else load_source(repo))
    if len(formats) > 1:
        raise SourceError(
            "the package sources mix .deb and .rpm packages",
            "build one appliance from one distribution's packages",
        )
    return formats.pop(), packages


def _installed(sysroot: Path) -> tuple[str, list[Package]]:
    if (sysroot / DPKG_STATUS).is_file():
        return "deb", load_installed(sysroot)
    return "rpm", load_rpm_installed(sysroot)


def open_universe(
    repos: Sequence[Path],
    sysroot: Path = Path("/"),
    host_cpu: str | None = None,
    weak_deps: bool = False,
) -> Universe:
    """All packages the given sources offer; the installed ones when there is no --repo."""
    if repos:
        kind, packages = _from_repos(repos)
        description = ", ".join(str(repo) for repo in repos)
    else:
        kind, packages = _installed(sysroot)
        description = f"the packages installed in {sysroot}"
    if not packages:
        raise SourceError(f"no packages found in {description}", "check the --repo paths")
    repository: Repository
    if kind == "rpm":
        repository = RpmRepository(packages, native_arch(host_cpu), weak_deps=weak_deps)
    else:
        repository = DebRepository(packages, native_arch(host_cpu))
    return Universe(kind, repository, packages, description)


def list_drivers(sysroot: Path = Path("/")) -> list[tuple[str, bool]]:
    """Each package format, and whether the sysroot has its installed-package database."""
    rpm_databases = ("var/lib/rpm", "usr/lib/sysimage/rpm")
    return [
        ("deb", (sysroot / DPKG_STATUS).is_file()),
        ("rpm", any((sysroot / place).is_dir() for place in rpm_databases)),
    ]
