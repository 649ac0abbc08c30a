"""Resolve requested package names into a dependency closure (a networkx DiGraph).

The resolver knows nothing of package formats: it asks a `Repository` for
candidates and requirements. Nodes are package names (one version of a name
per appliance) carrying the chosen `Package`; an edge A -> B means "A depends
on B", with `strict=True` for Pre-Depends-like edges.

The walk keeps the closure in plain dicts, and the `Resolution` turns them
into a networkx DiGraph the first time its graph is asked for (install
order, explanations). Why: `prepare` only needs to know the closure
resolves, and importing networkx (65-80 ms) was a third of its run with a
cached index; a dict lookup in the walk's inner loops is also cheaper than
`graph.nodes[name]`.

Choice is greedy and deterministic, and walks the graph the way apt does
(`apt-get install --no-install-recommends` into an empty system): every root
is chosen first (in sorted order), then each root's requirements are followed
depth first, in the order the package lists them, so a dependency's own
closure is complete before its parent's next requirement is looked at. An OR
group therefore sees what earlier requirements pulled in, as apt's does
(breadth first, `python3-exceptiongroup | python3 (>> 3.11)` would pick the
first alternative before python3 is in). A requirement already met by a
chosen package adds only an edge; otherwise the first alternative with an
installable candidate wins, taking the repository's most preferred candidate
that neither clashes with a chosen package of the same name nor conflicts
with one.

Deferred requirements (rpm's conditional and weak ones; Debian has none)
are not met during that walk but collected, then settled to a fixpoint, the
way libsolv decides weak dependencies after the hard ones: repeatedly, the
first collected requirement that now applies (its `when` relations met by the
chosen set, none of its `unless` ones) is met, hard ones without an `unless`
first, then hard ones with one, then weak ones; a package brought in is
walked depth first again, which may collect more. A requirement whose
`unless` is met is dropped for good (the chosen set only grows); one whose
`when` never comes true is never applied; a weak one nothing can satisfy is
ignored.

A repository may say what a request names (`requested(name)`, a list of
packages most preferred first; RpmRepository reads names as dnf install
does), else a request is `candidates(Relation(name))`. It may also ask for
unit propagation (`unit_propagation = True`, as RpmRepository does, because
libsolv propagates before it chooses): then, before a requirement is met by
a choice among several packages, any pending requirement on the walk's stack
that exactly one package can meet is met first (and that package walked), as
a SAT solver's propagation would. So ``tp-greet-1:3.0`` requiring
``libgreet.so.1`` (two providers) and ``tp-greet-libs(x86-64) = 1:3.0-1``
(one) gets the libs of its own version. Both are optional attributes, so
the `Repository` protocol is unchanged; so is `conflicts_with_any(package,
others)`, one call for what `conflicts` answers pair by pair.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from supermin.cache import cached
from supermin.errors import ResolveError
from supermin.ordering import OrderHelper, ordered_names
from supermin.packages import Package, Relation, Repository, Requirement

if TYPE_CHECKING:
    import networkx as nx


@dataclass(frozen=True, slots=True)
class Edge:
    """Why A depends on B: the last of its requirements B met, and what kind of edge
    (strict if any was, weak only if all were)."""

    strict: bool
    weak: bool
    requirement: str


@dataclass
class Resolution:
    chosen: dict[str, Package]  # in the order the walk chose them
    edges: dict[str, dict[str, Edge]]  # dependant -> dependency -> edge
    roots: list[str]  # the names asked for
    unknown: list[str]
    # The packages chosen for them: a name asked for may be a virtual package
    # or an rpm capability, met by a package of another name.
    chosen_roots: set[str] = field(default_factory=set)

    @cached_property
    def graph(self) -> nx.DiGraph:
        import networkx as nx  # imported when first needed: see the module docstring

        graph = nx.DiGraph()
        for name, package in self.chosen.items():
            graph.add_node(name, package=package, root=name in self.chosen_roots)
        for a, dependencies in self.edges.items():
            for b, edge in dependencies.items():
                graph.add_edge(
                    a, b, strict=edge.strict, weak=edge.weak, requirement=edge.requirement
                )
        return graph

    def packages(self) -> list[Package]:
        return [self.chosen[name] for name in sorted(self.chosen)]

    def is_root(self, name: str) -> bool:
        return name in self.chosen_roots

    def why(self, name: str) -> list[str]:
        """A shortest path from some root to `name`."""
        import networkx as nx  # imported when first needed: see the module docstring

        best: list[str] | None = None
        for root in self.roots:
            if root in self.graph and nx.has_path(self.graph, root, name):
                path: list[str] = nx.shortest_path(self.graph, root, name)
                if best is None or len(path) < len(best):
                    best = path
        return best or [name]

    def install_order(self, helper: OrderHelper | None = None) -> list[Package]:
        """Dependencies before dependants (see supermin.ordering.ordered_names).

        The order depends on nothing but the names and the edges with their
        strictness, so it is cached under a digest of those: a rebuild, even
        after a package was updated, reads it back instead of importing
        networkx (80-100 ms, a tenth of building the libguestfs appliance).
        Otherwise `helper`, when given, computes it; it is stopped either way.
        """
        try:
            names = cached(
                "install-order",
                self._order_key(),
                lambda: self._ordered_names(helper),
                self._orders_the_chosen,
            )
        finally:
            if helper is not None:
                helper.close()
        return [self.chosen[name] for name in names]

    def _orders_the_chosen(self, stored: object) -> bool:
        """Whether a stored value is an order of exactly the chosen names."""
        return (
            isinstance(stored, list)
            and all(isinstance(name, str) for name in stored)
            and sorted(stored) == sorted(self.chosen)
        )

    def _order_key(self) -> str:
        digest = hashlib.sha256(f"install order {_ORDER_RULES}".encode())
        for name in sorted(self.chosen):
            digest.update(f"\0n {name}".encode())
        for a in sorted(self.edges):
            for b, edge in sorted(self.edges[a].items()):
                digest.update(f"\0e {a} {b} {int(edge.strict)}".encode())
        return digest.hexdigest()[:32]

    def _ordered_names(self, helper: OrderHelper | None) -> list[str]:
        names = list(self.chosen)
        edges = [
            (a, b, edge.strict)
            for a, dependencies in self.edges.items()
            for b, edge in dependencies.items()
        ]
        order = helper.order(names, edges) if helper is not None else None
        return order if order is not None else ordered_names(names, edges)


# Bump when install_order's rules change: orders cached under the old ones are then unused.
_ORDER_RULES = 1


@dataclass
class _Frame:
    """A package whose requirements the walk is going through."""

    package: Package
    requirements: list[Requirement]
    index: int = 0


class _Resolver:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        # Repositories of SAT-solved formats (rpm: libsolv) ask for unit propagation.
        self.propagate = bool(getattr(repo, "unit_propagation", False))
        # One call per candidate instead of one per chosen package, where offered.
        self.conflicts_with_any: Callable[[Package, Iterable[Package]], bool] | None = getattr(
            repo, "conflicts_with_any", None
        )
        self.chosen: dict[str, Package] = {}
        self.edges: dict[str, dict[str, Edge]] = {}
        self.chosen_roots: set[str] = set()
        self.parent: dict[str, tuple[str, Requirement] | None] = {}
        self.deferred: list[tuple[Package, Requirement]] = []

    def chain(self, name: str) -> str:
        links = [name]
        step = self.parent.get(name)
        while step is not None:
            links.append(step[0])
            step = self.parent.get(step[0])
        return " -> ".join(reversed(links))

    def add(self, package: Package, root: bool) -> None:
        self.chosen[package.name] = package
        if root:
            self.chosen_roots.add(package.name)

    def holds(self, relation: Relation) -> bool:
        return any(self.chosen.get(c.name) is c for c in self.repo.candidates(relation))

    def satisfied_by(self, requirement: Requirement) -> Package | None:
        for relation in requirement.alternatives:
            for candidate in self.repo.candidates(relation):
                if self.chosen.get(candidate.name) is candidate:
                    return candidate
        return None

    def installable(self, candidates: list[Package]) -> Package | None:
        for candidate in candidates:
            if self.chosen.get(candidate.name) is not None:
                continue  # another version of this name is already in
            if self.conflicting(candidate):
                continue
            return candidate
        return None

    def conflicting(self, candidate: Package) -> bool:
        if self.conflicts_with_any is not None:
            return self.conflicts_with_any(candidate, self.chosen.values())
        conflicts = self.repo.conflicts
        return any(conflicts(candidate, chosen) for chosen in self.chosen.values())

    def choose(self, package: Package, requirement: Requirement) -> Package | None:
        for relation in requirement.alternatives:
            candidate = self.installable(self.repo.candidates(relation))
            if candidate is not None:
                return candidate
        if requirement.weak:
            return None
        raise ResolveError(
            f"{package.name} {package.version} needs {requirement}, which no package source "
            f"can satisfy (needed by {self.chain(package.name)})",
            "add a source with --repo that has it, or check the package names",
        )

    def run(self, roots: Sequence[str]) -> None:
        chosen_roots: list[Package] = []
        for name in roots:
            if name in self.chosen:
                self.chosen_roots.add(name)
                continue
            candidate = self.installable(requested(self.repo, name))
            if candidate is None:
                raise ResolveError(f"requested package {name} cannot be installed")
            if candidate.name in self.chosen:
                continue
            self.add(candidate, root=True)
            self.parent[candidate.name] = None
            chosen_roots.append(candidate)
        self.follow(chosen_roots)
        self.settle()

    def meet(self, package: Package, requirement: Requirement) -> Package | None:
        """Meet `requirement` of `package`; the package newly added for it, if any."""
        added = None
        dependency = self.satisfied_by(requirement)
        if dependency is None:
            dependency = self.choose(package, requirement)
            if dependency is None:
                return None  # a weak requirement nothing can meet
            self.add(dependency, root=False)
            self.parent[dependency.name] = (package.name, requirement)
            added = dependency
        if dependency.name != package.name:
            dependencies = self.edges.setdefault(package.name, {})
            edge = dependencies.get(dependency.name)
            strict = requirement.strict or (edge is not None and edge.strict)
            weak = requirement.weak and (edge is None or edge.weak)
            dependencies[dependency.name] = Edge(strict, weak, str(requirement))
        return added

    def follow(self, roots: Sequence[Package]) -> None:
        """Depth first from each of `roots` in turn, with an explicit stack: real chains run deep.

        With unit propagation (see the module docstring), before a requirement
        is met by a choice, a pending requirement anywhere on the stack (later
        roots included) that only one package can meet gets that package first.
        """
        stack = [_Frame(root, self.repo.requirements(root)) for root in reversed(roots)]
        while stack:
            frame = stack[-1]
            if frame.index == len(frame.requirements):
                stack.pop()
                continue
            requirement = frame.requirements[frame.index]
            if requirement.deferred:
                self.deferred.append((frame.package, requirement))
                frame.index += 1
                continue
            if self.propagate and self.unit(requirement) is None:
                forced = self.forced(stack)
                if forced is not None:
                    added = self.meet(*forced)
                    if added is not None:
                        stack.append(_Frame(added, self.repo.requirements(added)))
                    continue  # then look at `requirement` again
            frame.index += 1
            added = self.meet(frame.package, requirement)
            if added is not None:
                stack.append(_Frame(added, self.repo.requirements(added)))

    def unit(self, requirement: Requirement) -> Package | None:
        """The one package that can still meet `requirement`, if it is unmet and there is one."""
        if self.satisfied_by(requirement) is not None:
            return None
        found: Package | None = None
        for relation in requirement.alternatives:
            for candidate in self.repo.candidates(relation):
                if self.chosen.get(candidate.name) is not None or candidate is found:
                    continue
                if found is not None:
                    return None
                found = candidate
        if found is None or self.conflicting(found):
            return None
        return found

    def forced(self, stack: list[_Frame]) -> tuple[Package, Requirement] | None:
        """The first pending plain requirement on the stack that only one package can meet."""
        for frame in stack:
            for requirement in frame.requirements[frame.index :]:
                if not requirement.deferred and self.unit(requirement) is not None:
                    return frame.package, requirement
        return None

    def applies(self, requirement: Requirement) -> bool | None:
        """True if it applies now, False if it never will, None if not yet."""
        if any(self.holds(relation) for relation in requirement.unless):
            return False
        return True if all(self.holds(relation) for relation in requirement.when) else None

    def next_deferred(self) -> tuple[Package, Requirement] | None:
        best: tuple[tuple[bool, bool], int] | None = None
        waiting: list[tuple[Package, Requirement]] = []
        for package, requirement in self.deferred:
            state = self.applies(requirement)
            if state is False:
                continue
            if state:
                rank = (requirement.weak, bool(requirement.unless))
                if best is None or rank < best[0]:
                    best = (rank, len(waiting))
            waiting.append((package, requirement))
        self.deferred = waiting
        return None if best is None else self.deferred.pop(best[1])

    def settle(self) -> None:
        while (item := self.next_deferred()) is not None:
            added = self.meet(*item)
            if added is not None:
                self.follow([added])


def requested(repo: Repository, name: str) -> list[Package]:
    """What a request for `name` may install: `repo.requested(name)` where defined."""
    select = getattr(repo, "requested", None)
    if select is None:
        return repo.candidates(Relation(name))
    found: list[Package] = select(name)
    return found


def known_roots(repo: Repository, names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split requested names into those some source knows and those none does."""
    known: list[str] = []
    unknown: list[str] = []
    for name in names:
        (known if requested(repo, name) else unknown).append(name)
    return known, unknown


def resolve(repo: Repository, names: Iterable[str]) -> Resolution:
    """The closure of `names`. Unknown names are returned, and fatal only when all are."""
    requested = sorted(set(names))
    known, unknown = known_roots(repo, requested)
    if not known:
        listed = ", ".join(unknown) or "(none)"
        raise ResolveError(
            f"no package source knows any of the requested packages: {listed}",
            "check the names, or add a source with --repo",
        )
    resolver = _Resolver(repo)
    resolver.run(known)
    return Resolution(resolver.chosen, resolver.edges, known, unknown, resolver.chosen_roots)
