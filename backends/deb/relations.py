"""Debian relationship fields and dpkg version semantics, on top of python-debian."""

from __future__ import annotations

from functools import lru_cache

from debian.deb822 import PkgRelation
from debian.debian_support import version_compare

from supermin.packages import Relation, Requirement

# dpkg still accepts the obsolete `<` and `>` and reads them as `<=` and `>=`.
_OBSOLETE_OPS = {"<": "<=", ">": ">="}


def compare_versions(a: str, b: str) -> int:
    """dpkg's ordering: epochs, upstream and revision, `~` sorting before anything."""
    result: int = version_compare(a, b)
    return (result > 0) - (result < 0)


def version_satisfies(version: str, op: str | None, wanted: str | None) -> bool:
    if op is None or wanted is None:
        return True
    cmp = compare_versions(version, wanted)
    match _OBSOLETE_OPS.get(op, op):
        case "<<":
            return cmp < 0
        case "<=":
            return cmp <= 0
        case "=":
            return cmp == 0
        case ">=":
            return cmp >= 0
        case ">>":
            return cmp > 0
    raise ValueError(f"unknown version operator {op!r}")


@lru_cache(maxsize=65536)
def parse_alternatives(raw: str) -> tuple[tuple[Relation, ...], ...]:
    """Parse a Depends-style field into AND-of-OR groups of relations."""
    groups: list[tuple[Relation, ...]] = []
    if not raw.strip():
        return ()
    for group in PkgRelation.parse_relations(raw):
        relations: list[Relation] = []
        for rel in group:
            op, version = rel["version"] if rel["version"] else (None, None)
            if op is not None:
                op = _OBSOLETE_OPS.get(op, op)
            relations.append(Relation(rel["name"], op, version, rel["archqual"]))
        if relations:
            groups.append(tuple(relations))
    return tuple(groups)


def parse_requirements(depends: str, pre_depends: str) -> list[Requirement]:
    strict = [Requirement(alts, strict=True) for alts in parse_alternatives(pre_depends)]
    plain = [Requirement(alts) for alts in parse_alternatives(depends)]
    return strict + plain


@lru_cache(maxsize=65536)
def parse_flat(raw: str) -> tuple[Relation, ...]:
    """Fields without alternatives (Provides, Conflicts, Breaks)."""
    return tuple(rel for group in parse_alternatives(raw) for rel in group)
