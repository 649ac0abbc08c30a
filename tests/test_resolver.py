"""The resolver on the real Debian 12 archive (judged by apt) and on synthetic packages."""

from __future__ import annotations

import hashlib
import itertools
import os
import pickle
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import networkx as nx
import pytest
from debian.deb822 import Packages
from support.debdata import apt_closure, build_deb, debian_index, host_arch, synthetic_debs

import supermin.reading
import supermin.resolve
from supermin.backends.deb.index import KEPT_FIELDS, IndexBlocks, split_index
from supermin.backends.deb.repository import Catalogue, DebRepository
from supermin.backends.deb.sources import load_source
from supermin.cli import main
from supermin.errors import ResolveError
from supermin.ordering import OrderHelper, ordered_names
from supermin.packages import Package, Relation
from supermin.resolve import Edge, Resolution, resolve

T = TypeVar("T")

ROOT_SETS: list[tuple[str, ...]] = [
    ("bash", "coreutils"),
    ("openssh-server",),
    ("python3",),
    ("systemd-sysv",),
    ("util-linux", "kmod", "e2fsprogs"),
    ("bash", "coreutils", "hello"),
    # These two need apt's depth-first walk (see supermin/resolve.py). Breadth first,
    # python3-pytest's "python3-exceptiongroup | python3 (>> 3.11)" is decided before
    # python3 is in; libpango1.0-dev asks for the real (transitional) x11proto-core-dev
    # before x11proto-dev, which Provides it, is in.
    ("python3-pytest",),
    ("libpango1.0-dev",),
    # A provider tie, see PROVIDER_TIES.
    ("php8.2-oauth",),
]

# Where we knowingly install something other than apt: roots -> (virtual package, the
# provider we choose, the provider apt chooses). The only kind of difference left in a
# sample of 1000 single packages of bookworm main (993 identical) is a tie among
# providers of a virtual package with equal Priority. We take the first by name, as
# documented; apt's last tie-break (CompareProviders in apt-pkg/depcache.cc) is its
# internal package id, i.e. whichever name it happened to meet last while building its
# cache. The test checks that this one choice explains the whole difference.
PROVIDER_TIES: dict[tuple[str, ...], tuple[str, str, str]] = {
    # Six providers, all optional: libapache2-mod-php8.2 brings apache2 along.
    ("php8.2-oauth",): ("phpapi-20220829", "libapache2-mod-php8.2", "php8.2-phpdbg"),
}


def _timed(load: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    value = load()
    return time.perf_counter() - start, value


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private metadata cache for the whole module: nothing lands in ~/.cache."""
    directory = tmp_path_factory.mktemp("supermin-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUPERMIN_CACHE_DIR", str(directory))
        yield directory


@pytest.fixture(scope="module")
def debian(cache_dir: Path) -> DebRepository:
    """Debian 12 main: the index is split into stanzas, parsed as the resolver asks."""
    index = debian_index()
    elapsed, catalogues = _timed(lambda: load_source(index))
    count = sum(len(c) for c in catalogues)
    print(f"\n{index.name}: {count} packages, read in {elapsed:.2f}s")
    assert count > 60_000
    return DebRepository(catalogues, host_arch())


def _chosen(resolution: Resolution) -> dict[str, Package]:
    return {name: resolution.graph.nodes[name]["package"] for name in resolution.graph}


def _satisfied_within(repo: DebRepository, closure: Sequence[Package], relation: Relation) -> bool:
    return any(repo.satisfies(package, relation) for package in closure)


def _assert_consistent(repo: DebRepository, resolution: Resolution) -> None:
    """Every Depends/Pre-Depends met inside the closure; nothing in it conflicts."""
    graph = resolution.graph
    closure = list(_chosen(resolution).values())
    for package in closure:
        assert package.arch in (host_arch(), "all"), package.nva
        for requirement in repo.requirements(package):
            assert any(_satisfied_within(repo, closure, rel) for rel in requirement.alternatives), (
                f"{package.nva} needs {requirement}, not met inside the closure"
            )
    for one, other in itertools.combinations(closure, 2):
        assert not repo.conflicts(one, other), f"{one.nva} conflicts with {other.nva}"
    # Edges stand for requirements: strict ones for Pre-Depends.
    for a, b, data in graph.edges(data=True):
        needed = [
            req
            for req in repo.requirements(graph.nodes[a]["package"])
            if any(repo.satisfies(graph.nodes[b]["package"], rel) for rel in req.alternatives)
        ]
        assert needed, f"edge {a} -> {b} stands for no requirement of {a}"
        if data["strict"]:
            assert any(req.strict for req in needed), f"{a} -> {b} is strict without Pre-Depends"
    for package in closure:
        for requirement in repo.requirements(package):
            if not requirement.strict or any(
                repo.satisfies(package, rel) for rel in requirement.alternatives
            ):
                continue
            assert any(
                data["strict"]
                and any(
                    repo.satisfies(graph.nodes[b]["package"], r) for r in requirement.alternatives
                )
                for _, b, data in graph.out_edges(package.name, data=True)
            ), f"{package.name}: Pre-Depends {requirement} has no strict edge"


@pytest.mark.parametrize("roots", ROOT_SETS, ids="+".join)
def test_closure_is_consistent(debian: DebRepository, roots: tuple[str, ...]) -> None:
    resolution = resolve(debian, roots)
    assert resolution.unknown == []
    assert sorted(resolution.roots) == sorted(roots)
    graph = resolution.graph
    assert {name for name in graph if graph.nodes[name]["root"]} == set(roots)
    _assert_consistent(debian, resolution)


@pytest.mark.parametrize("roots", ROOT_SETS, ids="+".join)
def test_closure_matches_apt(debian: DebRepository, roots: tuple[str, ...]) -> None:
    resolution = resolve(debian, roots)
    apt = apt_closure(roots)
    if roots in PROVIDER_TIES:
        virtual, ours_pick, apt_pick = PROVIDER_TIES[roots]
        providers = [p.name for p in debian.candidates(Relation(virtual))]
        assert providers[0] == ours_pick and apt_pick in providers
        assert ours_pick in resolution.graph and ours_pick not in apt
        assert apt_pick in apt and apt_pick not in resolution.graph
        # Choosing as apt did, everything else is the same.
        resolution = resolve(debian, [*roots, apt_pick])
    ours = {name: package.version for name, package in _chosen(resolution).items()}
    assert sorted(ours.keys() - apt.keys()) == []
    assert sorted(apt.keys() - ours.keys()) == []
    assert ours == apt  # versions too


@pytest.mark.parametrize("roots", ROOT_SETS, ids="+".join)
def test_install_order_puts_dependencies_first(
    debian: DebRepository, roots: tuple[str, ...]
) -> None:
    resolution = resolve(debian, roots)
    order = [package.name for package in resolution.install_order()]
    assert sorted(order) == sorted(resolution.graph)
    position = {name: index for index, name in enumerate(order)}
    component = {
        name: number
        for number, members in enumerate(nx.strongly_connected_components(resolution.graph))
        for name in members
    }
    for a, b in resolution.graph.edges:
        if component[a] != component[b]:
            assert position[b] < position[a], f"{a} depends on {b} but comes first"
    # Inside a cycle, Pre-Depends still go first unless they form a cycle themselves.
    for members in nx.strongly_connected_components(resolution.graph):
        strict = [
            (a, b)
            for a, b, data in resolution.graph.subgraph(members).edges(data=True)
            if data["strict"]
        ]
        if nx.is_directed_acyclic_graph(nx.DiGraph(strict)):
            for a, b in strict:
                assert position[b] < position[a], f"{a} pre-depends on {b} but comes first"
    again = [package.name for package in resolve(debian, roots).install_order()]
    assert again == order


@pytest.mark.parametrize("roots", ROOT_SETS, ids="+".join)
def test_why_is_a_path_from_a_root(debian: DebRepository, roots: tuple[str, ...]) -> None:
    resolution = resolve(debian, roots)
    graph = resolution.graph
    for name in graph:
        path = resolution.why(name)
        assert path[0] in roots and path[-1] == name, path
        assert all(graph.has_edge(a, b) for a, b in itertools.pairwise(path)), path
        shortest = min(
            nx.shortest_path_length(graph, root, name)
            for root in roots
            if nx.has_path(graph, root, name)
        )
        assert len(path) - 1 == shortest
    for root in roots:
        assert resolution.why(root) == [root]


def _all(catalogues: Sequence[Catalogue]) -> list[Package]:
    return [package for catalogue in catalogues for package in catalogue]


def test_lazy_index_reads_every_stanza_like_python_debian(tmp_path: Path) -> None:
    """The fast split agrees with python-debian's deb822 on the whole Debian index."""
    index = debian_index()
    ours = {(p.name, p.version, p.arch): p.fields for p in _all(load_source(index))}
    with index.open("rb") as stream:
        theirs = {
            (s["Package"], s["Version"], s["Architecture"]): {
                k: s[k] for k in KEPT_FIELDS if k in s
            }
            for s in Packages.iter_paragraphs(stream, use_apt_pkg=False)
        }
    assert len(ours) == len(theirs) > 60_000
    assert ours == theirs


def test_cached_table_finds_what_a_plain_scan_finds() -> None:
    """Names and Provides looked up in the cached (sorted, bisected) table, against a
    straightforward dictionary built from every stanza's Package and Provides lines."""
    data = debian_index().read_bytes()
    blocks: dict[str, list[bytes]] = {}
    providers: dict[str, list[str]] = {}
    for stanza in data.split(b"\n\n"):
        stanza = stanza.strip(b"\n")
        if not stanza:
            continue
        lines = stanza.decode().split("\n")
        name = next(line[8:].strip() for line in lines if line.startswith("Package:"))
        blocks.setdefault(name, []).append(stanza)
        for line in lines:
            if line.startswith("Provides:"):
                for item in line[9:].split(","):
                    provided = item.split("(")[0].strip().split(":")[0]
                    providers.setdefault(provided, []).append(name)
    loaded = IndexBlocks.from_table(data, split_index(data).table())
    assert sorted(loaded.names()) == sorted(blocks)
    for name, texts in blocks.items():
        assert [bytes(b) for b in loaded.blocks(name)] == texts
    for provided, names in providers.items():
        assert loaded.providers_of(provided) == names
    assert loaded.blocks("supermin-no-such") == loaded.providers_of("supermin-no-such") == []


def test_index_changes_are_seen_at_once(tmp_path: Path) -> None:
    """The cached span table is keyed by the file's identity: an appended stanza is found."""
    index = tmp_path / "Packages"
    shutil.copyfile(debian_index(), index)
    first = load_source(index)
    assert DebRepository(first, host_arch()).candidates(Relation("supermin-test-appended")) == []
    with index.open("a") as out:
        out.write(
            "\nPackage: supermin-test-appended\nVersion: 1.0\nArchitecture: all\n"
            "Provides: supermin-test-virtual (= 1.0)\n"
            "Depends: bash\nDescription: appended by the index test\n continued\n"
        )
    again = DebRepository(load_source(index), host_arch())
    [appended] = again.candidates(Relation("supermin-test-appended"))
    assert appended.fields["Depends"] == "bash"
    assert again.candidates(Relation("supermin-test-virtual", ">=", "1.0")) == [appended]
    assert sum(len(c) for c in load_source(index)) == sum(len(c) for c in first) + 1


def test_same_size_rewrite_is_seen(tmp_path: Path) -> None:
    """Same size, new content, same mtime and inode: only spans are cached, text is read anew."""
    index = tmp_path / "Packages"
    index.write_text("Package: tp-one\nVersion: 1.0\nArchitecture: all\n")
    os.utime(index, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    assert [p.version for p in _all(load_source(index))] == ["1.0"]
    index.write_text("Package: tp-one\nVersion: 2.0\nArchitecture: all\n")
    os.utime(index, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    assert [p.version for p in _all(load_source(index))] == ["2.0"]


def test_span_table_is_cached_and_a_damaged_one_is_rebuilt(tmp_path: Path) -> None:
    index = tmp_path / "Packages"
    shutil.copyfile(debian_index(), index)
    cache = Path(os.environ["SUPERMIN_CACHE_DIR"])
    before = set(cache.glob("deb-index-table-*"))
    first = {
        p.nva for p in DebRepository(load_source(index), host_arch()).candidates(Relation("bash"))
    }
    [table] = set(cache.glob("deb-index-table-*")) - before
    stamp = table.stat().st_mtime_ns
    assert {
        p.nva for p in DebRepository(load_source(index), host_arch()).candidates(Relation("bash"))
    } == first
    assert set(cache.glob("deb-index-table-*")) - before == {table}
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the checksum catches it
    table.write_bytes(bytes(data))
    again = DebRepository(load_source(index), host_arch())
    assert {p.nva for p in again.candidates(Relation("bash"))} == first
    assert table.read_bytes() != bytes(data) and table.stat().st_mtime_ns >= stamp


# ------------------------------------------------------------------ synthetic packages


@pytest.fixture(scope="module")
def synthetic() -> DebRepository:
    """shared/testdata's feature-complete set (see make-debs.sh for what each one covers)."""
    return DebRepository(load_source(synthetic_debs()), host_arch())


@pytest.fixture(scope="module")
def extra_debs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small one-off packages, each directory a pool of its own."""
    base = tmp_path_factory.mktemp("debs")
    chain = base / "chain"  # chain-a -> chain-b -> chain-c (>= 2), but only chain-c 1.0
    build_deb(chain, "chain-a", "1.0", depends="chain-b")
    build_deb(chain, "chain-b", "1.0", depends="chain-c (>= 2)")
    build_deb(chain, "chain-c", "1.0")
    cycle = base / "cycle"  # cyc-a and cyc-b need each other; cyc-a pre-depends
    build_deb(cycle, "cyc-top", "1.0", depends="cyc-a")
    build_deb(cycle, "cyc-a", "1.0", pre_depends="cyc-b")
    build_deb(cycle, "cyc-b", "1.0", depends="cyc-a, cyc-base")
    build_deb(cycle, "cyc-base", "1.0")
    build_deb(cycle, "strict-x", "1.0", pre_depends="strict-y")  # a cycle of Pre-Depends
    build_deb(cycle, "strict-y", "1.0", pre_depends="strict-x")
    wants = base / "wants"  # virtual packages of the synthetic set, asked for by version
    build_deb(wants, "wants-plugin", "1.0", depends="tp-plugin (>= 1.0)")
    build_deb(wants, "wants-new-legacy", "1.0", depends="tp-legacy (>= 2.0)")
    build_deb(wants, "wants-config", "1.0", depends="tp-config (>= 1.0)")
    build_deb(wants, "wants-any-config", "1.0", depends="tp-config")
    return base


def _pool(directory: Path) -> DebRepository:
    return DebRepository(load_source(directory), host_arch())


def _with_synthetic(directory: Path) -> DebRepository:
    return DebRepository([*load_source(synthetic_debs()), *load_source(directory)], host_arch())


def test_unsatisfiable_dependency_names_requirement_and_chain(extra_debs: Path) -> None:
    repo = _pool(extra_debs / "chain")
    with pytest.raises(ResolveError) as caught:
        resolve(repo, ["chain-a"])
    message = str(caught.value)
    assert "chain-c (>= 2)" in message
    assert "chain-a -> chain-b" in message


def test_synthetic_broken_package_is_an_error(synthetic: DebRepository) -> None:
    with pytest.raises(ResolveError, match=r"tp-nonexistent \(>= 1\.0\)"):
        resolve(synthetic, ["tp-broken"])


def test_unknown_roots_are_returned(extra_debs: Path) -> None:
    repo = _pool(extra_debs / "chain")
    resolution = resolve(repo, ["chain-c", "nosuch"])
    assert resolution.unknown == ["nosuch"]
    assert resolution.roots == ["chain-c"]
    assert list(resolution.graph) == ["chain-c"]


def test_only_unknown_roots_is_an_error(extra_debs: Path) -> None:
    repo = _pool(extra_debs / "chain")
    with pytest.raises(ResolveError, match="nosuch"):
        resolve(repo, ["nosuch"])


def test_versioned_provides_meets_versioned_dependency(
    synthetic: DebRepository, extra_debs: Path
) -> None:
    assert [p.name for p in synthetic.candidates(Relation("tp-plugin", ">=", "1.0"))] == [
        "tp-plugin-a",
        "tp-plugin-b",
    ]
    assert synthetic.candidates(Relation("tp-plugin", ">>", "1.0")) == []
    # tp-newthing Provides tp-legacy (= 2.0): it meets ">= 2.0", the real 1.0 does not.
    assert [p.nva for p in synthetic.candidates(Relation("tp-legacy", ">=", "2.0"))] == [
        "tp-newthing-2.0-1.all"
    ]
    assert [p.nva for p in synthetic.candidates(Relation("tp-legacy", "<<", "1.5"))] == [
        "tp-legacy-1.0-1.all"
    ]
    repo = _with_synthetic(extra_debs / "wants")
    chosen = _chosen(resolve(repo, ["wants-plugin"]))
    assert set(chosen) == {"wants-plugin", "tp-plugin-a"}  # first provider by name
    chosen = _chosen(resolve(repo, ["wants-new-legacy"]))
    assert set(chosen) == {"wants-new-legacy", "tp-newthing"}


def test_unversioned_provides_does_not_meet_versioned_dependency(
    synthetic: DebRepository, extra_debs: Path
) -> None:
    # tp-config-default has "Provides: tp-config", without a version.
    assert [p.name for p in synthetic.candidates(Relation("tp-config"))] == ["tp-config-default"]
    assert synthetic.candidates(Relation("tp-config", ">=", "1.0")) == []
    repo = _with_synthetic(extra_debs / "wants")
    assert set(_chosen(resolve(repo, ["wants-any-config"]))) == {
        "wants-any-config",
        "tp-config-default",
    }
    with pytest.raises(ResolveError, match=r"tp-config \(>= 1\.0\)"):
        resolve(repo, ["wants-config"])


def test_epoch_beats_higher_upstream_version(synthetic: DebRepository) -> None:
    assert [p.version for p in synthetic.candidates(Relation("tp-greet"))] == ["1:1.0-1", "3.0-1"]
    assert [p.version for p in synthetic.candidates(Relation("tp-versions"))] == [
        "1:1.0-1",
        "1:1.0~rc1-1",
    ]
    chosen = _chosen(resolve(synthetic, ["tp-greet", "tp-versions"]))
    assert chosen["tp-greet"].version == "1:1.0-1"
    assert chosen["tp-versions"].version == "1:1.0-1"


def test_synthetic_closure_of_tp_rich(synthetic: DebRepository) -> None:
    resolution = resolve(synthetic, ["tp-rich"])
    assert {name: p.version for name, p in _chosen(resolution).items()} == {
        "tp-rich": "1.0-1",
        "tp-plugin-a": "1.0-1",  # first alternative of "tp-plugin-a (>= 1.0) | tp-plugin-b"
        "tp-greet": "1:1.0-1",  # ">= 1:1.0" and "<< 1:2.0"; 3.0-1 has epoch 0
        "tp-base-files": "1.0-1",
        "tp-busybox": "1:1.35.0-1",  # the only provider of tp-sh
        "tp-libgreet1": "1.0-1",
        "tp-config-default": "1.0-1",  # the only provider of tp-config
    }
    _assert_consistent(synthetic, resolution)


def test_pre_depends_edges_are_strict(synthetic: DebRepository) -> None:
    graph = resolve(synthetic, ["tp-greet"]).graph
    assert graph.edges["tp-greet", "tp-base-files"]["strict"] is True
    assert graph.edges["tp-greet", "tp-busybox"]["strict"] is True  # via virtual tp-sh
    assert graph.edges["tp-busybox", "tp-base-files"]["strict"] is True
    assert graph.edges["tp-greet", "tp-libgreet1"]["strict"] is False
    assert graph.edges["tp-greet", "tp-config-default"]["strict"] is False


def test_conflicts_and_breaks(synthetic: DebRepository) -> None:
    def package(name: str) -> Package:
        return synthetic.candidates(Relation(name))[0]

    assert synthetic.conflicts(package("tp-conflict"), package("tp-greet"))
    # Breaks: tp-legacy (<< 2.0) from tp-newthing, seen from either side.
    assert synthetic.conflicts(package("tp-legacy"), package("tp-newthing"))
    # tp-rich conflicts with tp-legacy (<< 1.5); tp-newthing provides tp-legacy (= 2.0).
    assert synthetic.conflicts(package("tp-rich"), package("tp-legacy"))
    assert not synthetic.conflicts(package("tp-rich"), package("tp-newthing"))
    with pytest.raises(ResolveError, match="tp-greet"):
        resolve(synthetic, ["tp-conflict", "tp-greet"])
    # The resolver's one call per candidate answers as the pairs do, either side.
    names = ["tp-conflict", "tp-greet", "tp-legacy", "tp-newthing", "tp-rich"]
    for one in names:
        others = [package(n) for n in names if n != one]
        assert synthetic.conflicts_with_any(package(one), others) == any(
            synthetic.conflicts(package(one), other) for other in others
        )
        for other in others:
            assert synthetic.conflicts_with_any(package(one), [other]) == synthetic.conflicts(
                other, package(one)
            )
    assert not synthetic.conflicts_with_any(package("tp-rich"), [package("tp-newthing")])
    assert synthetic.conflicts_with_any(
        package("tp-rich"), [package("tp-newthing"), package("tp-legacy")]
    )


def test_cycle_is_ordered_by_pre_depends(extra_debs: Path) -> None:
    repo = _pool(extra_debs / "cycle")
    resolution = resolve(repo, ["cyc-top"])
    graph = resolution.graph
    assert graph.edges["cyc-a", "cyc-b"]["strict"] is True
    assert graph.edges["cyc-b", "cyc-a"]["strict"] is False
    order = [p.name for p in resolution.install_order()]
    # By name cyc-a would go first; its Pre-Depends put cyc-b before it.
    assert order == ["cyc-base", "cyc-b", "cyc-a", "cyc-top"]
    for _ in range(5):
        assert [p.name for p in resolve(repo, ["cyc-top"]).install_order()] == order
    # A cycle of Pre-Depends alone cannot be honoured: it goes by name.
    strict_only = resolve(repo, ["strict-y"])
    assert [p.name for p in strict_only.install_order()] == ["strict-x", "strict-y"]


_ORDER_SCRIPT = """
import sys
from pathlib import Path
from debian.deb822 import Packages

from supermin.backends.deb.index import KEPT_FIELDS
from supermin.backends.deb.repository import Catalogue, DebRepository
from supermin.backends.deb.sources import load_source
from supermin.resolve import resolve
repo = DebRepository(load_source(Path(sys.argv[1])), sys.argv[2])
print(" ".join(p.name for p in resolve(repo, sys.argv[3:]).install_order()))
"""


def test_install_order_is_the_same_in_every_process(extra_debs: Path, tmp_path: Path) -> None:
    """Set iteration order changes with the hash seed; the install order must not."""
    orders = set()
    for seed in ("0", "1", "2", "12345"):
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _ORDER_SCRIPT,
                str(extra_debs / "cycle"),
                host_arch(),
                "cyc-top",
                "strict-x",
            ],
            cwd=tmp_path,  # not the checkout: its supermin/ would shadow the installed package
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        orders.add(proc.stdout.strip())
    assert orders == {"cyc-base cyc-b cyc-a cyc-top strict-x strict-y"}


_PREPARE_SCRIPT = """
import sys
from supermin.cli import main
status = main(["prepare", "cyc-top", "--repo", sys.argv[1], "-o", sys.argv[2]])
print(status, sorted(m for m in sys.modules if m.split(".")[0] == "networkx"))
"""


def test_prepare_does_not_import_networkx(extra_debs: Path, tmp_path: Path) -> None:
    """prepare needs the closure, not its graph: the 65-80 ms import is left to build."""
    proc = subprocess.run(
        [sys.executable, "-c", _PREPARE_SCRIPT, str(extra_debs / "cycle"), "out"],
        cwd=tmp_path,  # not the checkout: its supermin/ would shadow the installed package
        env={**os.environ, "SUPERMIN_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.split() == ["0", "[]"], proc.stderr
    assert (tmp_path / "out" / "packages").read_text() == "cyc-top\n"


def test_graph_is_the_walks_closure(extra_debs: Path) -> None:
    """The graph built on first use has the walk's packages, roots and edges, in its order."""
    resolution = resolve(_pool(extra_debs / "cycle"), ["cyc-top", "strict-x"])
    graph = resolution.graph
    assert list(graph) == list(resolution.chosen)
    assert {n for n in graph if graph.nodes[n]["root"]} == {"cyc-top", "strict-x"}
    assert all(graph.nodes[n]["package"] is p for n, p in resolution.chosen.items())
    edges = {(a, b) for a, deps in resolution.edges.items() for b in deps}
    assert set(graph.edges) == edges and len(edges) > 2
    assert resolution.graph is graph  # built once


_CACHED_ORDER_SCRIPT = """
import sys
from pathlib import Path
from supermin.backends.deb.repository import DebRepository
from supermin.backends.deb.sources import load_source
from supermin.resolve import resolve
repo = DebRepository(load_source(Path(sys.argv[1])), sys.argv[2])
order = [p.name for p in resolve(repo, ["cyc-top", "strict-x"]).install_order()]
print(" ".join(order), any(m.split(".")[0] == "networkx" for m in sys.modules))
"""


def test_a_rebuild_reads_the_install_order_from_the_cache(extra_debs: Path, tmp_path: Path) -> None:
    """The order is worked out with networkx once; later runs read it back, unless the
    stored value is damaged or not an order of these packages."""
    cache = tmp_path / "cache"
    right = "cyc-base cyc-b cyc-a cyc-top strict-x strict-y"

    def run(cache_dir: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", _CACHED_ORDER_SCRIPT, str(extra_debs / "cycle"), host_arch()],
            cwd=tmp_path,  # not the checkout: its supermin/ would shadow the installed package
            env={**os.environ, "SUPERMIN_CACHE_DIR": cache_dir},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    assert run(str(cache)) == f"{right} True"
    (stored,) = cache.glob("install-order-*.pickle")
    assert run(str(cache)) == f"{right} False"
    # A stored value that passes its checksum but is another order of other names.
    wrong = pickle.dumps(["cyc-top", "cyc-a"])
    stored.write_bytes(hashlib.sha256(wrong).digest() + wrong)
    assert run(str(cache)) == f"{right} True"
    assert run(str(cache)) == f"{right} False"  # the refused value was overwritten
    stored.write_bytes(stored.read_bytes()[:-3])  # torn: fails its checksum
    assert run(str(cache)) == f"{right} True"
    assert run(str(cache)) == f"{right} False"  # rewritten whole by the run before
    assert run("") == f"{right} True"  # --no-cache


def _two_in_a_cycle(version: str, a_predepends: bool) -> Resolution:
    a, b = (Package(name, version, "all", "deb", "test") for name in ("a", "b"))
    return Resolution(
        chosen={"a": a, "b": b},
        edges={
            "a": {"b": Edge(strict=a_predepends, weak=False, requirement="b")},
            "b": {"a": Edge(strict=not a_predepends, weak=False, requirement="a")},
        },
        roots=["a"],
        unknown=[],
    )


def test_the_cached_install_order_is_keyed_by_edges_not_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPERMIN_CACHE_DIR", str(tmp_path))
    first = _two_in_a_cycle("1", a_predepends=True)
    assert [p.name for p in first.install_order()] == ["b", "a"]
    # The same cycle with the Pre-Depends the other way round is another graph.
    flipped = _two_in_a_cycle("1", a_predepends=False)
    assert [p.name for p in flipped.install_order()] == ["a", "b"]
    assert len(list(tmp_path.glob("install-order-*.pickle"))) == 2
    # An update changes versions, not the graph: the stored order, today's packages.
    updated = _two_in_a_cycle("2", a_predepends=True)
    order = updated.install_order()
    assert [p.name for p in order] == ["b", "a"]
    assert all(p is updated.chosen[p.name] for p in order)
    assert len(list(tmp_path.glob("install-order-*.pickle"))) == 2


def _not_here(names: Sequence[str], edges: object) -> list[str]:
    raise AssertionError("the helper was to order these, not this process")


def test_the_order_helper_orders_as_this_process_would(
    extra_debs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPERMIN_CACHE_DIR", "")  # nothing cached: every order is computed
    resolution = resolve(_pool(extra_debs / "cycle"), ["cyc-top", "strict-x"])
    expected = [p.name for p in resolution.install_order()]
    assert expected == ["cyc-base", "cyc-b", "cyc-a", "cyc-top", "strict-x", "strict-y"]
    # A larger graph with cycles of both kinds, same answer from both sides.
    rng = random.Random(7)
    names = [f"p{n:03d}" for n in range(300)]
    edges = [(a, b, rng.random() < 0.2) for a in names for b in rng.sample(names, 4) if a != b]
    here = ordered_names(names, edges)
    helper = OrderHelper.start()
    assert helper is not None
    assert helper.order(names, edges) == here
    monkeypatch.setattr(supermin.resolve, "ordered_names", _not_here)
    helper = OrderHelper.start()
    assert helper is not None
    assert [p.name for p in resolution.install_order(helper)] == expected
    assert helper._process.returncode == 0  # it answered, and is gone


@pytest.mark.parametrize("program", ["/bin/false", "/bin/echo"])
def test_a_helper_that_gives_no_order_leaves_it_to_this_process(
    extra_debs: Path, monkeypatch: pytest.MonkeyPatch, program: str
) -> None:
    """A helper that fails, or answers something else than an order: the order is computed here."""
    monkeypatch.setenv("SUPERMIN_CACHE_DIR", "")
    resolution = resolve(_pool(extra_debs / "cycle"), ["cyc-top"])
    monkeypatch.setattr(sys, "executable", program)
    helper = OrderHelper.start()
    assert helper is not None
    order = [p.name for p in resolution.install_order(helper)]
    assert order == ["cyc-base", "cyc-b", "cyc-a", "cyc-top"]
    assert helper._process.returncode is not None  # reaped


def test_only_a_build_without_a_cached_order_starts_the_order_helper(
    extra_debs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = extra_debs / "cycle"
    monkeypatch.setenv("SUPERMIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(supermin.reading, "default_jobs", lambda: 2)  # a core to spare, as in CI
    started: list[OrderHelper] = []
    start = OrderHelper.start.__func__  # type: ignore[attr-defined]

    def counted(cls: type[OrderHelper]) -> OrderHelper | None:
        helper: OrderHelper | None = start(cls)
        assert helper is not None
        started.append(helper)
        return helper

    monkeypatch.setattr(OrderHelper, "start", classmethod(counted))
    monkeypatch.setattr(supermin.resolve, "ordered_names", _not_here)
    assert main(["prepare", "cyc-top", "--repo", str(pool), "-o", str(tmp_path / "d")]) == 0

    def build(output: str) -> None:
        command = ["build", str(tmp_path / "d"), "--repo", str(pool), "-f", "chroot"]
        assert main([*command, "-o", str(tmp_path / output)]) == 0

    build("first")
    assert [helper._process.returncode for helper in started] == [0]  # it gave the order
    assert len(list((tmp_path / "cache").glob("install-order-*.pickle"))) == 1
    build("again")
    assert len(started) == 1, "the order was cached: no helper"
    manifest = (tmp_path / "first/usr/lib/supermin/firstboot/manifest").read_text()
    assert manifest == (tmp_path / "again/usr/lib/supermin/firstboot/manifest").read_text()
