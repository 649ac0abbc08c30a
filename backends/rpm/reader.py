"""Open a chosen RPM package: a .rpm archive, or an installed package's files."""

from __future__ import annotations

from supermin.backends.rpm.archive import read_rpm
from supermin.errors import ArchiveError
from supermin.hostfiles.hostfs import HostFiles
from supermin.packages import Package, PackageContents
from supermin.spool import Spool


class RpmReader:
    def __init__(self, spool: Spool, host: HostFiles) -> None:
        self.spool = spool
        self.host = host

    def open(self, package: Package) -> PackageContents:
        if package.installed:
            return self._installed(package)
        if package.location is None or not package.location.is_file():
            raise ArchiveError(
                f"{package.location or package.nva}: listed by {package.source} but missing",
                "refresh the repository metadata or the directory of packages",
            )
        return read_rpm(package.location, self.spool, origin=package.name).package_contents()

    def _installed(self, package: Package) -> PackageContents:
        # Installed packages were configured on their own system: files are copied
        # as they are now (config files as edited there), and no script is deferred.
        files: tuple[str, ...] = getattr(package.meta, "files", ())
        ghosts = set(getattr(package.meta, "ghosts", ()))
        entries = self.host.entries((f for f in files if f not in ghosts), origin=package.name)
        return PackageContents(entries=entries, conffiles=getattr(package.meta, "conffiles", ()))
