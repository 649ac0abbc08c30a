"""Resolve requested package names into a dependency closure (a networkx DiGraph).

The resolver knows nothing of package formats: it asks a `Repository` for
candidates and requirements. Nodes are package names (one version of a name
per appliance) carrying the chosen `Package`; an edge A -> B means "A depends
on B", with `strict=True` for Pre-Depends-like edges.

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
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import networkx as nx

from supermin.errors import ResolveError
from supermin.packages import Package, Relation, Repository, Requirement


@dataclass
class Resolution:
    graph: nx.DiGraph
    roots: list[str]
    unknown: list[str]

    def packages(self) -> list[Package]:
        return [self.graph.nodes[name]["package"] for name in sorted(self.graph.nodes)]

    def why(self, name: str) -> list[str]:
        """A shortest path from some root to `name`."""
        best: list[str] | None = None
        for root in self.roots:
            if root in self.graph and nx.has_path(self.graph, root, name):
                path: list[str] = nx.shortest_path(self.graph, root, name)
                if best is None or len(path) < len(best):
                    best = path
        return best or [name]

    def install_order(self) -> list[Package]:
        """Dependencies before dependants; cycles broken deterministically.

        Strongly connected components are ordered topologically (ties by their
        smallest name); inside a component, strict (Pre-Depends) edges are kept
        when they form no cycle of their own, the rest goes by name.
        """
        graph = self.graph
        condensed = nx.condensation(graph)
        members = condensed.graph["mapping"]
        groups: dict[int, list[str]] = {}
        for name, group in members.items():
            groups.setdefault(group, []).append(name)
        order: list[str] = []
        reverse = condensed.reverse(copy=True)
        for group in nx.lexicographical_topological_sort(reverse, key=lambda g: min(groups[g])):
            order.extend(_order_component(graph, sorted(groups[group])))
        return [graph.nodes[name]["package"] for name in order]


def _order_component(graph: nx.DiGraph, names: list[str]) -> list[str]:
    if len(names) == 1:
        return names
    strict = nx.DiGraph()
    strict.add_nodes_from(names)
    for a, b, data in graph.subgraph(names).edges(data=True):
        if data.get("strict"):
            strict.add_edge(b, a)  # dependency first
    if nx.is_directed_acyclic_graph(strict):
        return list(nx.lexicographical_topological_sort(strict, key=lambda n: n))
    return names


class _Resolver:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.graph = nx.DiGraph()
        self.parent: dict[str, tuple[str, Requirement] | None] = {}

    def chosen(self, name: str) -> Package | None:
        if name in self.graph:
            package: Package = self.graph.nodes[name]["package"]
            return package
        return None

    def chain(self, name: str) -> str:
        links = [name]
        step = self.parent.get(name)
        while step is not None:
            links.append(step[0])
            step = self.parent.get(step[0])
        return " -> ".join(reversed(links))

    def add(self, package: Package, root: bool) -> None:
        self.graph.add_node(package.name, package=package, root=root)

    def satisfied_by(self, requirement: Requirement) -> Package | None:
        for relation in requirement.alternatives:
            for candidate in self.repo.candidates(relation):
                if self.chosen(candidate.name) is candidate:
                    return candidate
        return None

    def installable(self, relation: Relation) -> Package | None:
        for candidate in self.repo.candidates(relation):
            if self.chosen(candidate.name) is not None:
                continue  # another version of this name is already in
            if any(
                self.repo.conflicts(candidate, self.graph.nodes[n]["package"]) for n in self.graph
            ):
                continue
            return candidate
        return None

    def choose(self, package: Package, requirement: Requirement) -> Package:
        for relation in requirement.alternatives:
            candidate = self.installable(relation)
            if candidate is not None:
                return candidate
        raise ResolveError(
            f"{package.name} {package.version} needs {requirement}, which no package source "
            f"can satisfy (needed by {self.chain(package.name)})",
            "add a source with --repo that has it, or check the package names",
        )

    def run(self, roots: Sequence[str]) -> None:
        chosen_roots: list[Package] = []
        for name in roots:
            if name in self.graph:
                self.graph.nodes[name]["root"] = True
                continue
            candidate = self.installable(Relation(name))
            if candidate is None:
                raise ResolveError(f"requested package {name} cannot be installed")
            if candidate.name in self.graph:
                continue
            self.add(candidate, root=True)
            self.parent[candidate.name] = None
            chosen_roots.append(candidate)
        for root in chosen_roots:
            self.follow(root)

    def follow(self, root: Package) -> None:
        """Depth first from `root`, with an explicit stack: real chains run deep."""
        stack: list[tuple[Package, Iterator[Requirement]]] = [
            (root, iter(self.repo.requirements(root)))
        ]
        while stack:
            package, pending = stack[-1]
            requirement = next(pending, None)
            if requirement is None:
                stack.pop()
                continue
            dependency = self.satisfied_by(requirement)
            if dependency is None:
                dependency = self.choose(package, requirement)
                self.add(dependency, root=False)
                self.parent[dependency.name] = (package.name, requirement)
                stack.append((dependency, iter(self.repo.requirements(dependency))))
            if dependency.name != package.name:
                strict = requirement.strict or self.graph.edges.get(
                    (package.name, dependency.name), {}
                ).get("strict", False)
                self.graph.add_edge(
                    package.name, dependency.name, strict=strict, requirement=str(requirement)
                )


def known_roots(repo: Repository, names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split requested names into those some source knows and those none does."""
    known: list[str] = []
    unknown: list[str] = []
    for name in names:
        (known if repo.candidates(Relation(name)) else unknown).append(name)
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
    return Resolution(resolver.graph, known, unknown)
