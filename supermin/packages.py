"""The format-agnostic view of packages that the resolver and the build share.

Backends (one module per package format) implement `Repository` and
`PackageReader`; nothing outside `supermin.backends` knows whether a package
is a .deb or an .rpm.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from supermin.entry import FileEntry


@dataclass(frozen=True, slots=True)
class Relation:
    """One requirement on a name, optionally versioned.

    `op` is spelt as the package format does: <<, <=, =, >=, >> for Debian;
    <, <=, =, >=, > for rpm.
    """

    name: str
    op: str | None = None
    version: str | None = None
    arch: str | None = None

    def __str__(self) -> str:
        text = self.name + (f":{self.arch}" if self.arch else "")
        return f"{text} ({self.op} {self.version})" if self.op else text


@dataclass(frozen=True, slots=True)
class Requirement:
    """Alternatives of which one must be installed; `strict` for Pre-Depends-like edges.

    A conditional requirement (rpm's rich ``(a if b)``) applies only once every
    relation of `when` is met by the chosen packages and while none of
    `unless` is; a `weak` one (Recommends, Supplements) is met if it can be
    and otherwise ignored. Debian produces neither.
    """

    alternatives: tuple[Relation, ...]
    strict: bool = False
    when: tuple[Relation, ...] = ()
    unless: tuple[Relation, ...] = ()
    weak: bool = False

    @property
    def deferred(self) -> bool:
        """Whether the resolver settles it after the plain requirements (see resolve.py)."""
        return self.weak or bool(self.when or self.unless)

    def __str__(self) -> str:
        text = " | ".join(str(rel) for rel in self.alternatives)
        if self.when:
            text += " if " + " and ".join(str(rel) for rel in self.when)
        if self.unless:
            text += " unless " + " or ".join(str(rel) for rel in self.unless)
        return text


@dataclass(frozen=True, slots=True, eq=False)
class Package:
    """A package some source offers. Identity (not value) equality: sources own them."""

    name: str
    version: str
    arch: str
    format: str
    source: str  # human description of where it came from, for messages
    location: Path | None = None  # the archive; None for installed packages
    installed: bool = False
    fields: dict[str, str] = field(default_factory=dict)  # raw metadata, backend-owned
    meta: object = None  # parsed metadata a backend keeps for itself (e.g. an RpmHeader)

    @property
    def nva(self) -> str:
        return f"{self.name}-{self.version}.{self.arch}"


@dataclass(frozen=True, slots=True)
class Script:
    """A package script deferred to first boot."""

    phase: str  # e.g. preinst, postinst (deb); pre, post (rpm)
    stage: int  # scripts of a lower stage run first, for every package, before the next
    body: bytes
    arguments: tuple[str, ...]
    interpreter: str
    # The interpreter is a program run with the arguments alone, no script file
    # (e.g. `dpkg --configure -a` once a dpkg database is written).
    standalone: bool = False


@dataclass(frozen=True, slots=True)
class PackageContents:
    """What opening a package yields: its files, its scripts, its config files."""

    entries: Sequence[FileEntry]
    scripts: Sequence[Script] = ()
    conffiles: Sequence[str] = ()
    control_files: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PackageDatabase:
    """The package manager's own database, written when it can finish the install itself.

    First boot then runs only the scripts of `kept_phases` (those the package
    manager would have run while unpacking), followed by `steps`.
    """

    entries: Sequence[FileEntry]
    kept_phases: frozenset[str]
    steps: Sequence[tuple[Package, Script]]


class Repository(Protocol):
    """Everything the resolver needs to know about one package universe.

    A repository may also define `requested(name) -> list[Package]` (what a
    request for `name` selects, when that differs from its candidates) and
    `unit_propagation = True`; resolve.py looks for both and says what they do.
    """

    def candidates(self, relation: Relation) -> list[Package]:
        """Packages satisfying `relation`, most preferred first."""

    def requirements(self, package: Package) -> list[Requirement]:
        """What `package` needs installed (hard dependencies only)."""

    def conflicts(self, package: Package, other: Package) -> bool:
        """Whether the two cannot be installed together."""

    def satisfies(self, package: Package, relation: Relation) -> bool:
        """Whether `package` (by name or by what it provides) satisfies `relation`."""

    def names(self) -> Iterator[str]:
        """Every real package name known."""


class PackageReader(Protocol):
    """Opens a chosen package into entries and scripts."""

    def open(self, package: Package) -> PackageContents: ...
