"""The Debian package universe the resolver asks questions of.

Choice among candidates (documented in the README):
1. a package whose own name matches, highest version first (dpkg ordering),
   ties going to the source given first on the command line;
2. then packages that Provide the name (a versioned requirement is only met by
   a versioned Provides), ordered by Priority (required, important, standard,
   optional, extra), then by name, then highest version.
Only packages of the target architecture and `all` take part.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from functools import cmp_to_key
from typing import Protocol

from supermin.backends.deb.relations import (
    compare_versions,
    parse_flat,
    parse_requirements,
    version_satisfies,
)
from supermin.packages import Package, Relation, Requirement

# A package's Conflicts and Breaks relations, with the names they are about.
_Conflicts = tuple[tuple[Relation, ...], frozenset[str]]

_PRIORITY_RANK = {"required": 0, "important": 1, "standard": 2, "optional": 3, "extra": 4}


def _by_version_desc(packages: list[Package]) -> list[Package]:
    # sorted() is stable, so among equal versions the earlier source stays first.
    def newer_first(a: Package, b: Package) -> int:
        return compare_versions(b.version, a.version)

    return sorted(packages, key=cmp_to_key(newer_first))


class Catalogue(Protocol):
    """The packages of one source, looked up by name (an index answers lazily)."""

    def named(self, name: str) -> list[Package]:
        """Every package called `name`, in the source's order."""

    def providers(self, name: str) -> Iterable[str]:
        """Names of packages that may Provide `name` (checked again by the caller)."""

    def __iter__(self) -> Iterator[Package]: ...

    def __len__(self) -> int: ...


class PackageList:
    """A Catalogue of packages already read (a pool of .debs, the dpkg status)."""

    def __init__(self, packages: Iterable[Package]) -> None:
        self._packages = list(packages)
        self._by_name: dict[str, list[Package]] = defaultdict(list)
        self._providers: dict[str, list[str]] = defaultdict(list)
        for package in self._packages:
            self._by_name[package.name].append(package)
            for provided in parse_flat(package.fields.get("Provides", "")):
                self._providers[provided.name].append(package.name)

    def named(self, name: str) -> list[Package]:
        return self._by_name.get(name, [])

    def providers(self, name: str) -> Iterable[str]:
        return self._providers.get(name, [])

    def __iter__(self) -> Iterator[Package]:
        return iter(self._packages)

    def __len__(self) -> int:
        return len(self._packages)


class DebRepository:
    def __init__(self, catalogues: Sequence[Catalogue], arch: str) -> None:
        self.arch = arch
        self._catalogues = list(catalogues)
        self._by_name: dict[str, list[Package]] = {}
        self._candidates: dict[Relation, list[Package]] = {}
        # The resolver asks whether each candidate conflicts with every chosen
        # package: tens of thousands of pairs, each side's fields parsed once.
        self._conflicts_of: dict[Package, _Conflicts] = {}
        self._names_of: dict[Package, frozenset[str]] = {}

    def _named(self, name: str) -> list[Package]:
        """The packages called `name` for our architecture, highest version first."""
        found = self._by_name.get(name)
        if found is None:
            found = [
                package
                for catalogue in self._catalogues
                for package in catalogue.named(name)
                if package.arch in (self.arch, "all")
            ]
            if len(found) > 1:
                found = _by_version_desc(found)
            self._by_name[name] = found
        return found

    def _providers(self, name: str) -> list[Package]:
        names = dict.fromkeys(n for c in self._catalogues for n in c.providers(name))
        return [
            package
            for provider in names
            for package in self._named(provider)
            if any(provided.name == name for provided in self.provides(package))
        ]

    def provides(self, package: Package) -> tuple[Relation, ...]:
        return parse_flat(package.fields.get("Provides", ""))

    def names(self) -> Iterator[str]:
        return iter({package.name: None for c in self._catalogues for package in c})

    def _arch_matches(self, package: Package, relation: Relation) -> bool:
        # `:any` and `:native` are met by the native architecture, the only one
        # an appliance holds; an explicit architecture must match exactly.
        if relation.arch in (None, "any", "native"):
            return True
        return package.arch in (relation.arch, "all")

    def satisfies(self, package: Package, relation: Relation) -> bool:
        if not self._arch_matches(package, relation):
            return False
        if package.name == relation.name and version_satisfies(
            package.version, relation.op, relation.version
        ):
            return True
        for provided in self.provides(package):
            if provided.name != relation.name:
                continue
            if relation.op is None:
                return True
            # Only a versioned Provides (always `=`) can meet a versioned requirement.
            if (
                provided.op == "="
                and provided.version is not None
                and version_satisfies(provided.version, relation.op, relation.version)
            ):
                return True
        return False

    def candidates(self, relation: Relation) -> list[Package]:
        found = self._candidates.get(relation)
        if found is None:
            found = self._compute_candidates(relation)
            self._candidates[relation] = found
        return found

    def _compute_candidates(self, relation: Relation) -> list[Package]:
        real = [p for p in self._named(relation.name) if self.satisfies(p, relation)]
        virtual = [
            p
            for p in self._providers(relation.name)
            if p.name != relation.name and self.satisfies(p, relation)
        ]
        virtual.sort(key=lambda p: (_PRIORITY_RANK.get(p.fields.get("Priority", ""), 9), p.name))
        by_provider: dict[str, list[Package]] = {}
        for package in virtual:
            by_provider.setdefault(package.name, []).append(package)
        ordered: list[Package] = real
        for packages in by_provider.values():
            ordered.extend(_by_version_desc(packages))
        return ordered

    def requirements(self, package: Package) -> list[Requirement]:
        return parse_requirements(
            package.fields.get("Depends", ""), package.fields.get("Pre-Depends", "")
        )

    def conflicts(self, package: Package, other: Package) -> bool:
        return self.conflicts_with_any(package, (other,))

    def conflicts_with_any(self, package: Package, others: Iterable[Package]) -> bool:
        """Whether `package` conflicts with any of `others`, in one call.

        The resolver asks this of every candidate against everything chosen
        (24,500 pairs for libguestfs's appliance); most packages declare no
        Conflicts or Breaks, and one loop here skips them at a dict lookup each.
        """
        # A relation can only be met by a package it names, itself or by what it
        # provides: for nearly every pair no name is shared, which one set
        # operation on the names tells, before any version is compared.
        mine, my_targets = self._conflict_relations(package)
        my_names = self._names(package)
        known = self._conflicts_of
        for other in others:
            if other.name == package.name:
                continue
            conflicts = known.get(other)
            theirs, their_targets = conflicts or self._conflict_relations(other)
            if mine and not my_targets.isdisjoint(self._names(other)) and self._met(mine, other):
                return True
            if theirs and not their_targets.isdisjoint(my_names) and self._met(theirs, package):
                return True
        return False

    def _conflict_relations(self, package: Package) -> _Conflicts:
        conflicts = self._conflicts_of.get(package)
        if conflicts is None:
            raw = ", ".join(
                package.fields[name] for name in ("Conflicts", "Breaks") if name in package.fields
            )
            relations = parse_flat(raw) if raw else ()
            targets = frozenset(relation.name for relation in relations)
            conflicts = self._conflicts_of[package] = (relations, targets)
        return conflicts

    def _names(self, package: Package) -> frozenset[str]:
        """The package's name and every name it provides."""
        names = self._names_of.get(package)
        if names is None:
            provided = (relation.name for relation in self.provides(package))
            names = self._names_of[package] = frozenset((package.name, *provided))
        return names

    def _met(self, relations: tuple[Relation, ...], other: Package) -> bool:
        """Whether one of a package's Conflicts/Breaks `relations` is met by `other`."""
        names = self._names(other)
        return any(self.satisfies(other, rel) for rel in relations if rel.name in names)
