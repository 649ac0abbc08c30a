"""Find Debian packages: a tree of .debs, an APT repository, or the dpkg database.

The kind of source is detected from what the path holds, never configured.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from supermin.backends.deb.archive import read_control
from supermin.backends.deb.index import Stanza, find_indexes, load_index, parse_control
from supermin.backends.deb.index import parse_index as parse_status
from supermin.cache import cached, file_identity
from supermin.errors import SourceError
from supermin.packages import Package

DPKG_STATUS = Path("var/lib/dpkg/status")

_MACHINE_TO_DEB_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "i686": "i386",
    "i386": "i386",
    "armv7l": "armhf",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def native_arch(host_cpu: str | None = None) -> str:
    machine = host_cpu or platform.machine()
    return _MACHINE_TO_DEB_ARCH.get(machine, machine)


def _package(stanza: Stanza, source: str, location: Path | None, installed: bool) -> Package:
    return Package(
        name=stanza["Package"],
        version=stanza.get("Version", "0"),
        arch=stanza.get("Architecture", "all"),
        format="deb",
        source=source,
        location=location,
        installed=installed,
        fields=stanza,
    )


def _deb_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for top, dirs, files in os.walk(directory, onerror=_raise):
        dirs.sort()
        found.extend(Path(top) / name for name in sorted(files) if name.endswith(".deb"))
    return found


def _raise(err: OSError) -> None:
    raise SourceError(f"cannot read package source {err.filename}: {err.strerror}")


def _pool_stanzas(debs: list[Path]) -> list[Stanza]:
    stanzas = []
    for deb in debs:
        stanza = parse_control(read_control(deb).get("control", b""))
        if "Package" in stanza:
            stanza["Filename"] = str(deb)
            stanzas.append(stanza)
    return stanzas


def load_pool(directory: Path) -> list[Package]:
    debs = _deb_files(directory)
    stanzas = cached("deb-pool", file_identity(debs), lambda: _pool_stanzas(debs))
    return [_package(s, str(directory), Path(s["Filename"]), False) for s in stanzas]


def _repo_indexes(directory: Path) -> tuple[Path, list[Path]]:
    """The base that Filename fields are relative to, and the index files."""
    flat = list(find_indexes(directory))
    if flat:
        return directory, flat
    dists = directory / "dists"
    indexes: list[Path] = []
    if dists.is_dir():
        for binary_dir in sorted(dists.glob("*/*/binary-*")):
            indexes.extend(find_indexes(binary_dir))
        for binary_dir in sorted(dists.glob("*/binary-*")):  # suites without components
            indexes.extend(find_indexes(binary_dir))
    return directory, indexes


def load_repository(directory: Path, indexes: list[Path]) -> list[Package]:
    packages = []
    for index in indexes:
        for stanza in load_index(index):
            filename = stanza.get("Filename")
            location = directory / filename if filename else None
            packages.append(_package(stanza, str(index), location, False))
    return packages


def load_installed(sysroot: Path) -> list[Package]:
    status = sysroot / DPKG_STATUS
    if not status.is_file():
        raise SourceError(
            f"no dpkg database at {status}",
            "pass --repo PATH to build from package archives instead",
        )

    def parse() -> list[Stanza]:
        return [s for s in parse_status(status) if s.get("Status", "").endswith(" installed")]

    stanzas = cached("deb-status", file_identity([status]), parse)
    return [_package(s, str(status), None, True) for s in stanzas]


def load_source(path: Path) -> list[Package]:
    """Detect what `path` is and list the packages it offers."""
    if path.is_file() and path.suffix == ".deb":
        return [_package(_pool_stanzas([path])[0], str(path), path, False)]
    if path.is_file() and path.name.removesuffix(path.suffix).endswith("Packages"):
        return load_repository(path.parent, [path])
    if path.is_file() and path.name.endswith("Packages"):
        return load_repository(path.parent, [path])
    if not path.is_dir():
        raise SourceError(
            f"package source {path} is neither a directory nor a .deb",
            "check the --repo argument",
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise SourceError(f"cannot read package source {path}: permission denied")
    base, indexes = _repo_indexes(path)
    if indexes:
        return load_repository(base, indexes)
    return load_pool(path)
