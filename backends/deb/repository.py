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
from collections.abc import Iterator, Sequence
from functools import cmp_to_key

from supermin.backends.deb.relations import (
    compare_versions,
    parse_flat,
    parse_requirements,
    version_satisfies,
)
from supermin.packages import Package, Relation, Requirement

_PRIORITY_RANK = {"required": 0, "important": 1, "standard": 2, "optional": 3, "extra": 4}


def _by_version_desc(packages: list[Package]) -> list[Package]:
    # sorted() is stable, so among equal versions the earlier source stays first.
    def newer_first(a: Package, b: Package) -> int:
        return compare_versions(b.version, a.version)

    return sorted(packages, key=cmp_to_key(newer_first))


class DebRepository:
    def __init__(self, packages: Sequence[Package], arch: str) -> None:
        self.arch = arch
        by_name: dict[str, list[Package]] = defaultdict(list)
        providers: dict[str, list[tuple[Package, Relation]]] = defaultdict(list)
        for package in packages:
            if package.arch not in (arch, "all"):
                continue
            by_name[package.name].append(package)
            for provided in self.provides(package):
                providers[provided.name].append((package, provided))
        self._by_name = {name: _by_version_desc(pkgs) for name, pkgs in by_name.items()}
        self._providers = dict(providers)
        self._candidates: dict[Relation, list[Package]] = {}

    def provides(self, package: Package) -> tuple[Relation, ...]:
        return parse_flat(package.fields.get("Provides", ""))

    def names(self) -> Iterator[str]:
        return iter(self._by_name)

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
        real = [p for p in self._by_name.get(relation.name, []) if self.satisfies(p, relation)]
        virtual = [
            p
            for p, _ in self._providers.get(relation.name, [])
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
        if package.name == other.name:
            return False
        return self._declares_conflict(package, other) or self._declares_conflict(other, package)

    def _declares_conflict(self, package: Package, other: Package) -> bool:
        raw = ", ".join(
            package.fields[name] for name in ("Conflicts", "Breaks") if name in package.fields
        )
        return any(self.satisfies(other, rel) for rel in parse_flat(raw)) if raw else False
