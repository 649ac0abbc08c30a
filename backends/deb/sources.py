"""Find Debian packages: a tree of .debs, an APT repository, or the dpkg database.

The kind of source is detected from what the path holds, never configured.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from supermin.backends.deb.index import (
    IndexBlocks,
    Stanza,
    find_indexes,
    parse_control,
    parse_stanza,
    read_index_blocks,
)
from supermin.backends.deb.index import parse_index as parse_status
from supermin.backends.deb.repository import Catalogue, PackageList
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


def packagelist_name(package: Package) -> str:
    """`name_version_arch` (epoch kept in the version), as supermin 5 lists a .deb."""
    return f"{package.name}_{package.version}_{package.arch}"


def _deb_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for top, dirs, files in os.walk(directory, onerror=_raise):
        dirs.sort()
        found.extend(Path(top) / name for name in sorted(files) if name.endswith(".deb"))
    return found


def _raise(err: OSError) -> None:
    raise SourceError(f"cannot read package source {err.filename}: {err.strerror}")


def _pool_stanzas(debs: list[Path]) -> list[Stanza]:
    from supermin.backends.deb.archive import read_control  # libarchive: only for pools
    from supermin.reading import default_jobs

    # Decompressing control.tar is libarchive's work, done without the GIL: on
    # every core, as the packages' contents are.
    with ThreadPoolExecutor(default_jobs(), thread_name_prefix="supermin-control") as pool:
        controls = list(pool.map(read_control, debs))
    stanzas = []
    for deb, control in zip(debs, controls, strict=True):
        stanza = parse_control(control.get("control", b""))
        if "Package" in stanza:
            stanza["Filename"] = str(deb)
            stanzas.append(stanza)
    return stanzas


def load_pool(directory: Path) -> PackageList:
    debs = _deb_files(directory)
    stanzas = cached("deb-pool", file_identity(debs), lambda: _pool_stanzas(debs))
    return PackageList(_package(s, str(directory), Path(s["Filename"]), False) for s in stanzas)


class IndexCatalogue:
    """One Packages index, its stanzas parsed only when their package is asked for."""

    def __init__(self, blocks: IndexBlocks, base: Path, source: str) -> None:
        self._blocks = blocks
        self._base = base
        self._source = source
        self._packages: dict[str, list[Package]] = {}

    def named(self, name: str) -> list[Package]:
        found = self._packages.get(name)
        if found is None:
            found = [self._package(block) for block in self._blocks.blocks(name)]
            self._packages[name] = found
        return found

    def _package(self, block: bytes) -> Package:
        stanza = parse_stanza(block)
        filename = stanza.get("Filename")
        return _package(stanza, self._source, self._base / filename if filename else None, False)

    def providers(self, name: str) -> Iterable[str]:
        return self._blocks.providers_of(name)

    def __iter__(self) -> Iterator[Package]:
        return (package for name in self._blocks.names() for package in self.named(name))

    def __len__(self) -> int:
        return self._blocks.count


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


def load_repository(directory: Path, indexes: list[Path]) -> list[Catalogue]:
    return [IndexCatalogue(read_index_blocks(i), directory, str(i)) for i in indexes]


def load_installed(sysroot: Path) -> PackageList:
    status = sysroot / DPKG_STATUS
    if not status.is_file():
        raise SourceError(
            f"no dpkg database at {status}",
            "pass --repo PATH to build from package archives instead",
        )

    def parse() -> list[Stanza]:
        return [s for s in parse_status(status) if s.get("Status", "").endswith(" installed")]

    stanzas = cached("deb-status", file_identity([status]), parse)
    return PackageList(_package(s, str(status), None, True) for s in stanzas)


def load_source(path: Path) -> list[Catalogue]:
    """Detect what `path` is; the catalogues of the packages it offers."""
    if path.is_file() and path.suffix == ".deb":
        return [PackageList([_package(_pool_stanzas([path])[0], str(path), path, False)])]
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
    return [load_pool(path)]
