"""The install order of a resolved closure, and a helper process that computes it early.

The order is computed with networkx, whose import costs 0.1-0.15 s of CPU.
A build needs it once the archives are being read, when every core is busy
decompressing and the import would hold the GIL the readers need between
members. A cold build (the order is cached otherwise) therefore starts a
second interpreter as it begins, while this one is still alone on one core
importing and resolving: that interpreter imports networkx on the idle core,
then waits for the closure and answers with its order. Anything amiss with
it (no process, no networkx on its path, a crash) and the order is computed
here, as before; the helper only ever saves time.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from supermin.interpreter import start_function

if TYPE_CHECKING:
    import networkx as nx

# A helper that has not answered by then is stuck: the order is computed here instead.
_ANSWER_TIMEOUT = 60.0

Edge = tuple[str, str, bool]  # dependant, dependency, strict (Pre-Depends-like)


def ordered_names(names: Sequence[str], edges: Iterable[Edge]) -> list[str]:
    """Dependencies before dependants; cycles broken deterministically.

    Strongly connected components are ordered topologically (ties by their
    smallest name); inside a component, strict edges are kept when they form
    no cycle of their own, the rest goes by name.
    """
    import networkx as nx  # imported when first needed: see supermin.resolve

    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    strict: dict[tuple[str, str], bool] = {}
    for dependant, dependency, is_strict in edges:
        graph.add_edge(dependant, dependency)
        strict[dependant, dependency] = is_strict
    condensed = nx.condensation(graph)
    groups: dict[int, list[str]] = {}
    for name, group in condensed.graph["mapping"].items():
        groups.setdefault(group, []).append(name)
    order: list[str] = []
    reverse = condensed.reverse(copy=True)
    for group in nx.lexicographical_topological_sort(reverse, key=lambda g: min(groups[g])):
        order.extend(_order_component(graph, strict, sorted(groups[group])))
    return order


def _order_component(
    graph: nx.DiGraph, strict: dict[tuple[str, str], bool], names: list[str]
) -> list[str]:
    if len(names) == 1:
        return names
    import networkx as nx

    kept = nx.DiGraph()
    kept.add_nodes_from(names)
    for a, b in graph.subgraph(names).edges():
        if strict[a, b]:
            kept.add_edge(b, a)  # dependency first
    if nx.is_directed_acyclic_graph(kept):
        return list(nx.lexicographical_topological_sort(kept, key=lambda n: n))
    return names


def helper_worthwhile() -> bool:
    """Whether a build should start an OrderHelper: a core to spare, and no order cached.

    Any stored order will do as a sign: a rebuild finds its own and never asks.
    """
    # Imported here, not by the module: the helper imports it too, and needs neither.
    from supermin.cache import holds_any
    from supermin.reading import default_jobs

    return default_jobs() > 1 and not holds_any("install-order")


class OrderHelper:
    """A second interpreter, importing networkx now, to order a closure later."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @classmethod
    def start(cls) -> OrderHelper | None:
        """The helper, or None where none can be started."""
        # With site-packages: networkx is a third-party import.
        process = start_function("supermin.ordering", "serve", site=True, stderr=subprocess.DEVNULL)
        return cls(process) if process is not None else None

    def order(self, names: Sequence[str], edges: Sequence[Edge]) -> list[str] | None:
        """The helper's order of `names`, or None if it gave none (the caller computes it)."""
        request = json.dumps({"names": list(names), "edges": [list(edge) for edge in edges]})
        try:
            answer, _ = self._process.communicate(request.encode(), timeout=_ANSWER_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            self.close()
            return None
        if self._process.returncode != 0:
            return None
        try:
            order = json.loads(answer)
        except ValueError:
            return None
        if not isinstance(order, list) or sorted(order) != sorted(names):
            return None
        return order

    def close(self) -> None:
        """Stop the helper, whatever it is doing (a no-op once it answered)."""
        if self._process.returncode is None:
            self._process.kill()
            self._process.communicate()


def serve() -> None:
    """The helper's main (see OrderHelper): import networkx, then order what comes on stdin."""
    # Ctrl-C is for the process that started this one, which then stops it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import networkx  # noqa: F401  the point of this process: imported before it is asked

    request = json.loads(sys.stdin.buffer.read())
    edges = [(str(a), str(b), bool(s)) for a, b, s in request["edges"]]
    order = ordered_names([str(name) for name in request["names"]], edges)
    sys.stdout.buffer.write(json.dumps(order).encode())


@contextlib.contextmanager
def order_helper(wanted: bool) -> Iterator[OrderHelper | None]:
    """An OrderHelper if `wanted` and one can start, stopped on leaving."""
    helper = OrderHelper.start() if wanted else None
    try:
        yield helper
    finally:
        if helper is not None:
            helper.close()
