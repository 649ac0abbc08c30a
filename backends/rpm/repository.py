"""The rpm package universe the resolver asks questions of.

What satisfies what (rpm's rules, lib/rpmds.c):
- a package provides its own name at its EVR and whatever its Provides say;
  a versioned requirement is met when the ranges overlap (`ranges_overlap`:
  no release in the requirement matches every release, an unversioned
  Provides matches every version); sonames (``libc.so.6(GLIBC_2.34)(64bit)``),
  ``config(…)`` and arch-qualified names (``foo(x86-64)``) are plain provides;
- ``rpmlib(…)`` requirements are rpm's own features and always met;
- a requirement starting with "/" is met by a package owning that file or
  providing that name: primary.xml (or a .rpm header, or the rpm database)
  answers for /etc/* and */bin/*, filelists.xml for any other path, read only
  then (see `repodata`);
- rich dependencies (see `richdeps`) become several requirements, their
  normal form: ``and`` splits, the condition of ``if`` becomes a `when` the
  resolver checks against the chosen set (``(a if b else c)`` is "a when b"
  and "c or b"), the "and not b" half of ``unless`` is dropped (the resolver
  cannot forbid), and ``or``/``with``/``without`` stay whole as one relation
  whose candidates are computed here (``with``: one package meeting both);
  rich Conflicts are judged on the one other package (approximation);
- Conflicts match names and provides; Obsoletes match package names only (as
  rpm and libsolv do by default) and count as a conflict both ways;
- only packages of the target architecture and noarch take part (Debian
  names such as amd64 are mapped to rpm's); other architectures, i686 on
  x86_64 included, are left out, so multilib pairs never compete;
- weak dependencies only with ``weak_deps=True``: Recommends become weak
  requirements, and a package whose Supplements hold for the chosen set is
  added (Suggests and Enhances never install anything).

Choice among the candidates of a dependency, most preferred first, follows
libsolv's policy (src/policy.c, policy_filter_unwanted), which dnf uses:
1. a candidate obsoleted by another candidate of a different name goes last
   (prune_obsoleted: ``Requires: tp-legacy`` gets tp-newthing, which
   obsoletes and provides it);
2. one version per name, the newest EVR (rpmvercmp) first; a name whose
   best candidate is older than another package of that name goes back
   (dislike_old_versions, for a versioned requirement such as ``foo < 2``);
3. fewer "common dependency" penalties first: where candidates Provide one
   name with ``=`` versions, the lower versions are penalised
   (sort_by_common_dep: ``zfoo`` providing ``foo = 2.0`` beats ``afoo``
   providing ``foo = 1.0``);
4. then by name, as strcmp sorts: for ``Requires: foo`` libsolv chooses a
   package ``afoo`` that provides ``foo`` over the package ``foo`` itself
   (checked against dnf 4.14 and libsolv 0.7.39; DESIGN.md §3's "a package
   whose name matches" holds for requests, below, not for dependencies);
5. the older versions of each name follow its newest, as fallbacks.
The resolver prefers a candidate already chosen, and meets a requirement
that only one package can meet before any choice (`unit_propagation`), as
libsolv's propagation does. libsolv also prefers providers that a chosen
package Recommends or Suggests; this repository has no view of the chosen
set and does not. The or-alternatives of a rich dependency are one relation,
so ``(zz or aa)`` chooses aa, as libsolv does.

A request (`requested`, a root) is read as ``dnf install`` reads its
argument: packages of that name, else name-version, name-version-release
(with an optional epoch, ``name-E:V-R``, and ``.arch``), else what provides
it (a capability or a file); among packages of the name, those obsoleting
them take part too, so ``tp-legacy`` installs tp-newthing as dnf does
(libsolv's own testcase job, and solv-resolve.py, install tp-legacy).

tests/test_rpm_resolver.py checks these rules against dnf and libsolv, on
the synthetic package set and on metadata-only probes (PROBES) of each rule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from functools import cmp_to_key

from supermin.backends.rpm.metadata import (
    SENSE_MISSINGOK,
    SENSE_PREREQ,
    SENSE_SCRIPT_POST,
    SENSE_SCRIPT_PRE,
    FileLists,
    RpmMeta,
    bulk_allocation,
    in_primary,
)
from supermin.backends.rpm.richdeps import (
    Node,
    RichDepError,
    Simple,
    Trigger,
    clauses,
    is_atom,
    leaf_names,
    matches,
    parse,
    simples,
    triggers,
)
from supermin.backends.rpm.version import (
    EQUAL,
    SENSE_MASK,
    compare_evr,
    evr_satisfies,
    parse_evr,
    ranges_overlap,
    sense_flags,
)
from supermin.packages import Package, Relation, Requirement

_DEB_TO_RPM_ARCH = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "i386": "i686",
    "armhf": "armv7hl",
    "armel": "armv5tel",
    "ppc64el": "ppc64le",
    "mips64el": "mips64el",
    "loong64": "loongarch64",
}
_STRICT = SENSE_PREREQ | SENSE_SCRIPT_PRE | SENSE_SCRIPT_POST
_HEX = frozenset("0123456789abcdef")


def rpm_arch(arch: str) -> str:
    """rpm's name for an architecture given as Debian or the kernel spells it."""
    return _DEB_TO_RPM_ARCH.get(arch, arch)


def _meta(package: Package) -> RpmMeta:
    meta = package.meta
    if not isinstance(meta, RpmMeta):
        raise TypeError(f"{package.nva} does not come from an rpm source")
    return meta


def _simple(relation: Relation) -> Simple:
    return Simple(relation.name, relation.op, relation.version)


def _relation(node: Node) -> Relation:
    if isinstance(node, Simple):
        return Relation(node.name, node.op, node.version)
    return Relation(str(node))


def _dependency_relation(name: str, flags: int, version: str) -> Relation:
    op = _op(flags)
    return Relation(name, op, version) if op and version else Relation(name)


def _op(flags: int) -> str | None:
    sense = flags & SENSE_MASK
    if not sense:
        return None
    return "".join(sign for bit, sign in ((2, "<"), (4, ">"), (8, "=")) if sense & bit)


def _newest_first(packages: list[Package]) -> list[Package]:
    if len(packages) < 2:
        return packages

    # Each EVR parsed once, not once per comparison; sorted() is stable, so equal
    # versions keep their source order.
    evrs = {id(p): parse_evr(p.version) for p in packages}

    def newer_first(a: Package, b: Package) -> int:
        return compare_evr(evrs[id(b)], evrs[id(a)])

    return sorted(packages, key=cmp_to_key(newer_first))


class _Named:
    """Packages by name, newest first: each name's list is sorted when first asked for.

    Sorting all 17,649 AppStream packages by version took 0.3 s of a cached
    prepare that looks at a few hundred names.
    """

    def __init__(self, groups: dict[str, list[Package]]) -> None:
        self._groups = groups  # in source order until sorted
        self._sorted: set[str] = set()

    def get(self, name: str) -> list[Package]:
        group = self._groups.get(name)
        if group is None:
            return []
        if name not in self._sorted:
            group = self._groups[name] = _newest_first(group)
            self._sorted.add(name)
        return group

    def __contains__(self, name: str) -> bool:
        return name in self._groups

    def __iter__(self) -> Iterator[str]:
        return iter(self._groups)

    def newest_first(self) -> Iterator[list[Package]]:
        """Every name's list, sorted."""
        return (self.get(name) for name in self._groups)

    def source_order(self) -> Iterator[list[Package]]:
        """Every name's list as it stands: for indexes whose users order what they find."""
        return iter(self._groups.values())


class RpmRepository:
    # libsolv meets requirements only one package can meet before it makes any choice.
    unit_propagation = True

    def __init__(self, packages: Sequence[Package], arch: str, weak_deps: bool = False) -> None:
        self.arch = rpm_arch(arch)
        self.weak_deps = weak_deps
        accepted = (self.arch, "noarch")
        by_name: dict[str, list[Package]] = defaultdict(list)
        providers: dict[str, list[tuple[Package, int, str]]] = defaultdict(list)
        with bulk_allocation():
            for package in packages:
                if package.arch not in accepted:
                    continue
                by_name[package.name].append(package)
                for name, flags, version in _meta(package).triples("provides"):
                    providers[name].append((package, flags, version))
            self._by_name = _Named(dict(by_name))
        self._providers = dict(providers)
        self._candidates: dict[Relation, list[Package]] = {}
        self._requirements: dict[Package, list[Requirement]] = {}
        self._files: dict[str, list[Package]] | None = None
        self._file_lists: dict[str, list[Package]] = {}
        self._supplementers: dict[str, list[tuple[Package, Requirement]]] | None = None
        self._obsoleted_by: dict[str, list[tuple[Package, int, str]]] | None = None

    # ------------------------------------------------------------ Repository protocol

    def names(self) -> Iterator[str]:
        return iter(self._by_name)

    def candidates(self, relation: Relation) -> list[Package]:
        found = self._candidates.get(relation)
        if found is None:
            found = self._compute_candidates(relation)
            self._candidates[relation] = found
        return found

    def satisfies(self, package: Package, relation: Relation) -> bool:
        if relation.name.startswith("("):
            try:
                node = parse(relation.name)
            except RichDepError:
                return False
            return matches(node, lambda simple: self._satisfies(package, simple))
        return self._satisfies(package, _simple(relation))

    def requirements(self, package: Package) -> list[Requirement]:
        found = self._requirements.get(package)
        if found is None:
            found = self._compute_requirements(package)
            self._requirements[package] = found
        return found

    def conflicts(self, package: Package, other: Package) -> bool:
        if package.name == other.name:
            return False
        return self._declares_conflict(package, other) or self._declares_conflict(other, package)

    # ------------------------------------------------------------ satisfaction

    def _satisfies(self, package: Package, simple: Simple) -> bool:
        name, op, version = simple.name, simple.op, simple.version
        if package.name == name and evr_satisfies(package.version, op, version):
            return True
        wanted = sense_flags(op)
        for provided, flags, provided_version in _meta(package).triples("provides"):
            if provided == name and ranges_overlap(flags, provided_version, wanted, version or ""):
                return True
        return name.startswith("/") and package in self._file_owners(name)

    def _declares_conflict(self, package: Package, other: Package) -> bool:
        meta = _meta(package)
        for name, flags, version in meta.triples("obsoletes"):
            if other.name == name and evr_satisfies(other.version, _op(flags), version or None):
                return True
        for name, flags, version in meta.triples("conflicts"):
            if name.startswith("("):
                try:
                    node = parse(name)
                except RichDepError:
                    continue
                # Approximation: every operand is judged on `other` alone.
                if matches(node, lambda simple: self._satisfies(other, simple)):
                    return True
            elif self._satisfies(other, Simple(name, _op(flags), version or None)):
                return True
        return False

    # ------------------------------------------------------------ files

    def _file_owners(self, path: str) -> list[Package]:
        if self._files is None:
            files: dict[str, list[Package]] = defaultdict(list)
            for group in self._by_name.newest_first():
                for package in group:
                    for owned in _meta(package).files:
                        files[owned].append(package)
            self._files = dict(files)
        owners = self._files.get(path, [])
        if in_primary(path):
            return owners
        return owners + [p for p in self._from_file_lists(path) if p not in owners]

    def _from_file_lists(self, path: str) -> list[Package]:
        """Owners of `path` among packages whose metadata lists only some of their files."""
        if path in self._file_lists:
            return self._file_lists[path]
        partial: dict[int, tuple[FileLists, dict[str, list[Package]]]] = {}
        for group in self._by_name.newest_first():
            for package in group:
                lists = _meta(package).filelists
                if lists is not None:
                    entry = partial.setdefault(id(lists), (lists, defaultdict(list)))
                    entry[1][_meta(package).nevra].append(package)
        if not partial:
            return []
        wanted = self._file_dependencies() | {path}
        for lists, by_nevra in partial.values():
            for owned, nevras in lists.owners(wanted).items():
                found = self._file_lists.setdefault(owned, [])
                found.extend(p for nevra in nevras for p in by_nevra.get(nevra, ()))
        for owned in wanted:
            self._file_lists.setdefault(owned, [])
        return self._file_lists[path]

    def _file_dependencies(self) -> set[str]:
        """Paths some package depends on that primary cannot answer (libsolv's addfileprovides)."""
        paths: set[str] = set()
        for group in self._by_name.source_order():
            for package in group:
                meta = _meta(package)
                for kind in ("requires", "recommends", "conflicts", "supplements"):
                    for name, _, _ in meta.triples(kind):
                        if name.startswith("/"):
                            paths.add(name)
                        elif name.startswith("(") and "/" in name:
                            try:
                                paths.update(s.name for s in simples(parse(name)))
                            except RichDepError:
                                continue
        return {path for path in paths if path.startswith("/") and not in_primary(path)}

    # ------------------------------------------------------------ candidates

    def _compute_candidates(self, relation: Relation) -> list[Package]:
        name = relation.name
        if name.startswith("("):
            try:
                node = parse(name)
            except RichDepError:
                return []
            found = self._atom(node)
        else:
            found = self._simple_candidates(_simple(relation))
        return self._ordered(found)

    def _simple_candidates(self, simple: Simple) -> list[Package]:
        found = [p for p in self._by_name.get(simple.name) if self._satisfies(p, simple)]
        wanted = sense_flags(simple.op)
        for package, flags, version in self._providers.get(simple.name, []):
            if package not in found and ranges_overlap(
                flags, version, wanted, simple.version or ""
            ):
                found.append(package)
        if simple.name.startswith("/"):
            found.extend(p for p in self._file_owners(simple.name) if p not in found)
        return found

    def _atom(self, node: Node) -> list[Package]:
        """The packages meeting an atom: a simple dependency, or an or/with/without set."""
        if isinstance(node, Simple):
            return self._simple_candidates(node)
        if node.op == "or" or not is_atom(node):
            # A non-atom (an and/if/unless inside with) is read as its union of names.
            union: list[Package] = []
            for operand in node.operands:
                union.extend(p for p in self._atom(operand) if p not in union)
            if node.op == "or":
                return union
            return [p for p in union if self.satisfies(p, Relation(str(node)))]
        first = self._atom(node.operands[0])
        if node.op == "with":
            return [p for p in first if all(self._meets(p, o) for o in node.operands[1:])]
        return [p for p in first if not self._meets(p, node.operands[1])]  # without

    def _meets(self, package: Package, node: Node) -> bool:
        return matches(node, lambda simple: self._satisfies(package, simple))

    def _by_spec(self, text: str) -> list[Package]:
        """dnf's reading of an install argument: name[-[epoch:]version[-release]][.arch]."""
        forms: list[tuple[str, str | None]] = [(text, None)]
        for suffix in (self.arch, "noarch"):
            if text.endswith("." + suffix):
                forms.append((text[: -len(suffix) - 1], suffix))
        found: list[Package] = []
        for spec, arch in forms:
            for name, evr in self._splits(spec):
                want = parse_evr(evr)
                for package in self._by_name.get(name):
                    meta = _meta(package)
                    if arch is not None and package.arch != arch:
                        continue
                    if want.epoch is not None and (meta.epoch or 0) != want.epoch:
                        continue
                    if meta.version != want.version:
                        continue
                    if want.release is not None and meta.release != want.release:
                        continue
                    found.append(package)
            if arch is not None and spec in self._by_name:
                found.extend(p for p in self._by_name.get(spec) if p.arch == arch)
        return found

    @staticmethod
    def _splits(spec: str) -> Iterator[tuple[str, str]]:
        """(name, "[E:]V[-R]") readings of name-version[-release], longest name first."""
        dashes = [i for i, char in enumerate(spec) if char == "-"]
        for i in reversed(dashes):
            yield spec[:i], spec[i + 1 :]

    def requested(self, name: str) -> list[Package]:
        """The packages a request for `name` selects, most preferred first (see above)."""
        named = self._by_name.get(name) or (
            [] if name.startswith(("/", "(")) else self._by_spec(name)
        )
        if not named:
            return self.candidates(Relation(name))
        found = list(named)
        for package in named:
            for obsoleter, flags, version in self._obsoleters().get(package.name, ()):
                if obsoleter not in found and evr_satisfies(
                    package.version, _op(flags), version or None
                ):
                    found.append(obsoleter)
        return self._ordered(found)

    def _obsoleters(self) -> dict[str, list[tuple[Package, int, str]]]:
        if self._obsoleted_by is None:
            index: dict[str, list[tuple[Package, int, str]]] = defaultdict(list)
            # requested() hands what it finds here to _ordered(), which sorts each
            # name's packages anew (stably, as the lists here would be sorted).
            for group in self._by_name.source_order():
                for package in group:
                    for name, flags, version in _meta(package).triples("obsoletes"):
                        if name != package.name:
                            index[name].append((package, flags, version))
            self._obsoleted_by = dict(index)
        return self._obsoleted_by

    def _ordered(self, found: list[Package]) -> list[Package]:
        if len(found) < 2:
            return found
        groups: dict[str, list[Package]] = {}
        for package in found:
            groups.setdefault(package.name, []).append(package)
        for name, group in groups.items():
            groups[name] = _newest_first(group)
        best = [group[0] for group in groups.values()]
        obsoleted = {p.name for p in best if any(self._obsoletes(o, p) for o in best)}
        penalty = self._common_dep_penalties(best)

        def rank(package: Package) -> tuple[bool, int, bool, str]:
            name = package.name
            newest = (self._by_name.get(name) or [package])[0]
            old = compare_evr(parse_evr(newest.version), parse_evr(package.version)) > 0
            return (name in obsoleted, penalty.get(name, 0), old, name)

        ordered: list[Package] = []
        for package in sorted(best, key=rank):
            ordered.extend(groups[package.name])
        return ordered

    def _obsoletes(self, package: Package, other: Package) -> bool:
        if package.name == other.name:
            return False
        return any(
            other.name == name and evr_satisfies(other.version, _op(flags), version or None)
            for name, flags, version in _meta(package).triples("obsoletes")
        )

    @staticmethod
    def _common_dep_penalties(best: list[Package]) -> dict[str, int]:
        """libsolv's sort_by_common_dep: lower `=` versions of a shared Provides cost."""
        entries: list[tuple[str, str, str]] = []
        for package in best:
            for name, flags, version in _meta(package).triples("provides"):
                if flags & SENSE_MASK != EQUAL or not version:
                    continue
                if len(version) >= 4 and set(version) <= _HEX:
                    continue  # a hash, not a version
                entries.append((name, version, package.name))
        if len(entries) < 2:
            return {}

        def order(a: tuple[str, str, str], b: tuple[str, str, str]) -> int:
            if a[0] != b[0]:
                return -1 if a[0] < b[0] else 1
            return compare_evr(parse_evr(b[1]), parse_evr(a[1]))

        entries.sort(key=cmp_to_key(order))
        penalty: dict[str, int] = {}
        bad = 0
        for index, entry in enumerate(entries):
            previous = entries[index - 1] if index else None
            if previous is not None and previous[0] == entry[0]:
                if previous[2] != entry[2] and order(previous, entry) < 0:
                    bad += 1
            else:
                bad = 0
            penalty[entry[2]] = penalty.get(entry[2], 0) + bad
        return penalty

    # ------------------------------------------------------------ requirements

    def _compute_requirements(self, package: Package) -> list[Requirement]:
        meta = _meta(package)
        found: list[Requirement] = []
        for name, flags, version in meta.triples("requires"):
            if name.startswith("rpmlib("):
                continue  # rpm's own features: met by the rpm that installs
            weak = bool(flags & SENSE_MISSINGOK)
            if weak and not self.weak_deps:
                continue
            found.extend(self._dependency(name, flags, version, bool(flags & _STRICT), weak))
        if self.weak_deps:
            for name, flags, version in meta.triples("recommends"):
                found.extend(self._dependency(name, flags, version, False, True))
            found.extend(self._supplemented_by(package))
        unique: dict[Requirement, None] = dict.fromkeys(found)
        return list(unique)

    def _dependency(
        self, name: str, flags: int, version: str, strict: bool, weak: bool
    ) -> list[Requirement]:
        if not name.startswith("("):
            return [Requirement((_dependency_relation(name, flags, version),), strict, weak=weak)]
        try:
            node = parse(name)
        except RichDepError:
            # rpm itself refuses it: nothing can satisfy it.
            return [Requirement((Relation(name),), strict, weak=weak)]
        return [
            Requirement(
                (_relation(clause.goal),),
                strict,
                when=tuple(map(_relation, clause.when)),
                weak=weak,
            )
            for clause in clauses(node)
        ]

    def _supplemented_by(self, package: Package) -> list[Requirement]:
        """Weak, conditional requirements on the packages whose Supplements `package` may fire."""
        index = self._supplement_index()
        names = [package.name, *(name for name, _, _ in _meta(package).triples("provides"))]
        found: list[Requirement] = []
        for name in dict.fromkeys(names):
            found.extend(r for supplier, r in index.get(name, ()) if supplier is not package)
        return found

    def _supplement_index(self) -> dict[str, list[tuple[Package, Requirement]]]:
        if self._supplementers is None:
            index: dict[str, list[tuple[Package, Requirement]]] = defaultdict(list)
            for group in self._by_name.newest_first():
                for package in group:
                    for name, flags, version in _meta(package).triples("supplements"):
                        for trigger, names in self._triggers(name, flags, version):
                            requirement = Requirement(
                                (Relation(package.name, "=", package.version),),
                                when=tuple(map(_relation, trigger.holds)),
                                unless=tuple(map(_relation, trigger.fails)),
                                weak=True,
                            )
                            for leaf in names:
                                index[leaf].append((package, requirement))
            self._supplementers = dict(index)
        return self._supplementers

    @staticmethod
    def _triggers(name: str, flags: int, version: str) -> list[tuple[Trigger, set[str]]]:
        try:
            node: Node = parse(name) if name.startswith("(") else Simple(name, _op(flags), version)
        except RichDepError:
            return []
        return [(trigger, leaf_names(trigger.holds[0])) for trigger in triggers(node)]
