"""Pick the backend for each package source and build one package universe."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from supermin.backends.deb.reader import DebReader
from supermin.backends.deb.repository import DebRepository
from supermin.backends.deb.sources import load_installed, load_source, native_arch
from supermin.hostfiles.hostfs import HostFiles

from supermin.errors import SourceError
from supermin.packages import Package, PackageReader, Repository
from supermin.spool import Spool


@dataclass
class Universe:
    repository: Repository
    packages: list[Package]
    description: str

    def reader(self, spool: Spool, host: HostFiles) -> PackageReader:
        return DebReader(spool, host)


def _looks_like_rpm(path: Path) -> bool:
    if path.is_dir():
        return (path / "repodata" / "repomd.xml").is_file()
    return path.suffix == ".rpm"


def open_universe(
    repos: Sequence[Path], sysroot: Path = Path("/"), host_cpu: str | None = None
) -> Universe:
    """All packages the given sources offer; the installed ones when there is no --repo."""
    arch = native_arch(host_cpu)
    packages: list[Package] = []
    if not repos:
        packages = load_installed(sysroot)
        description = f"the packages installed in {sysroot}"
    else:
        for repo in repos:
            if not repo.exists():
                raise SourceError(f"package source {repo} does not exist", "check --repo")
            if not os.access(repo, os.R_OK | (os.X_OK if repo.is_dir() else 0)):
                raise SourceError(f"cannot read package source {repo}: permission denied")
            if _looks_like_rpm(repo):
                raise SourceError(
                    f"package source {repo} holds RPM packages, which this version cannot read"
                )
            packages.extend(load_source(repo))
        description = ", ".join(str(repo) for repo in repos)
    if not packages:
        raise SourceError(f"no packages found in {description}", "check the --repo paths")
    return Universe(DebRepository(packages, arch), packages, description)
