"""Open a chosen Debian package: a .deb archive, or an installed package's files."""

from __future__ import annotations

from pathlib import Path

from supermin.backends.deb.archive import read_deb
from supermin.errors import ArchiveError
from supermin.hostfiles.hostfs import HostFiles
from supermin.packages import Package, PackageContents, Script
from supermin.spool import Spool

DPKG_INFO = Path("var/lib/dpkg/info")

# What dpkg passes each maintainer script on a first install; `stage` orders
# all preinsts (unpack time) before all postinsts (configure time).
_FIRST_INSTALL = {
    "preinst": (0, ("install",)),
    "postinst": (1, ("configure", "")),
}


def interpreter_of(body: bytes) -> str:
    """The `#!` line's command, or /bin/sh as dpkg would run a script without one."""
    if body.startswith(b"#!"):
        line = body[2:].split(b"\n", 1)[0].strip()
        if line:
            return line.decode("utf-8", errors="replace")
    return "/bin/sh"


def maintainer_scripts(control: dict[str, bytes]) -> list[Script]:
    return [
        Script(phase, stage, control[phase], arguments, interpreter_of(control[phase]))
        for phase, (stage, arguments) in _FIRST_INSTALL.items()
        if phase in control
    ]


def _conffiles(control: dict[str, bytes]) -> list[str]:
    text = control.get("conffiles", b"").decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


class DebReader:
    def __init__(self, spool: Spool, host: HostFiles) -> None:
        self.spool = spool
        self.host = host

    def open(self, package: Package) -> PackageContents:
        if package.installed:
            return self._installed(package)
        if package.location is None:
            raise ArchiveError(f"{package.nva}: the source gives no archive location")
        if not package.location.is_file():
            raise ArchiveError(
                f"{package.location}: listed by {package.source} but missing",
                "refresh the repository index or the pool",
            )
        contents = read_deb(package.location, self.spool, origin=package.name)
        control = contents.control_files
        return PackageContents(
            entries=contents.entries,
            scripts=maintainer_scripts(control),
            conffiles=_conffiles(control),
            control_files=control,
        )

    def _list_file(self, package: Package) -> Path:
        info = self.host.sysroot / DPKG_INFO
        for name in (f"{package.name}:{package.arch}.list", f"{package.name}.list"):
            if (info / name).is_file():
                return info / name
        raise ArchiveError(
            f"installed package {package.name} has no file list in {info}",
            "the dpkg database looks damaged; try `dpkg --audit`",
        )

    def _installed(self, package: Package) -> PackageContents:
        # Installed packages were configured on their own system: their files are
        # copied as they are now and no script is deferred (supermin 5's behaviour).
        listed = self._list_file(package).read_text(errors="surrogateescape").splitlines()
        entries = self.host.entries(listed, origin=package.name)
        conffiles = [
            line.split()[0]
            for line in package.fields.get("Conffiles", "").splitlines()
            if line.strip()
        ]
        return PackageContents(entries=entries, conffiles=conffiles)
