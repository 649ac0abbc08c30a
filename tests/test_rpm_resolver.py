"""The rpm backend: package sources, rich dependencies and the resolver, judged by dnf and libsolv.

The references are the two tools Fedora's own installs go through: dnf (offline,
``dnf --installroot … --assumeno install``, the command shared/testdata/README.md
verified) and libsolv (shared/testdata's solv-resolve.py, the `solv` wheel). Every job
is run through all three and the closures (sets of NEVRAs) must agree; where we differ
from one reference by design, DIFFERENCES names the job and the reason.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from support.rpmdata import (
    MetaPackage,
    Unsolvable,
    dnf_closure,
    dnf_install,
    rpm_query_installed,
    solv_closure,
    synthetic_rpms,
    write_repodata,
)
from support.rpmdata import (
    testdata_dir as shared_testdata,
)

from supermin.backends.rpm import repodata
from supermin.backends.rpm.metadata import RpmMeta
from supermin.backends.rpm.repository import RpmRepository, rpm_arch
from supermin.backends.rpm.richdeps import (
    Rich,
    RichDepError,
    Simple,
    clauses,
    matches,
    parse,
    triggers,
)
from supermin.backends.rpm.sources import load_rpm_installed, load_rpm_source
from supermin.errors import ResolveError, SourceError
from supermin.packages import Package, Relation, Requirement
from supermin.resolve import resolve

T = TypeVar("T")
P = MetaPackage

# Install jobs on the synthetic set (make-rpms.sh), each with and without weak deps.
JOBS: list[tuple[str, ...]] = [
    ("tp-rich",),  # or / with / if rich deps; Recommends (tp-files, (tp-luascripts and …))
    ("tp-filedep",),  # a */bin/* file dep from primary and one only filelists.xml has
    ("tp-plugin-b",),
    ("tp-greet-devel",),  # file dep /usr/bin/pkg-config, %{?_isa} epoch-versioned Requires
    ("tp-perms", "tp-mover"),  # two roots; tp-mover 2.0 beats 1.0
    ("tp-greet-3.0",),  # name-version request: the older 1:3.0 and its own libs
    ("tp-config",),  # a virtual name: its provider
    ("/usr/bin/pkg-config",),  # a file path as the request
    ("tp-scripts", "tp-luascripts", "tp-files"),
]

# Jobs where one reference installs something else, by design, and why.
DIFFERENCES: dict[tuple[str, ...], str] = {
    ("tp-legacy",): (
        "tp-newthing obsoletes (and provides) tp-legacy: dnf installs the obsoleter for a "
        "request of the obsoleted name (its obsoletes=True), and so do we; libsolv's bare "
        "install job (solv-resolve.py) installs tp-legacy itself"
    ),
}

# Questions the synthetic set does not pose, as packages that exist only as metadata.
# Each one was put to dnf 4.14 and libsolv 0.7.39 (below, on every run) and pins one
# rule of repository.py's docstring.
PROBES: dict[str, list[MetaPackage]] = {
    # libsolv ignores the name: of the providers of `foo`, "afoo" sorts first.
    "provider-by-name": [P("app", requires=("foo",)), P("foo"), P("afoo", provides=("foo",))],
    # sort_by_common_dep: the higher `=` version of a shared Provides wins.
    "provider-by-provided-version": [
        P("app", requires=("foo",)),
        P("foo", provides=("foo = 1.0",)),
        P("afoo", provides=("foo = 1.0",)),
        P("zfoo", "2.0-1", provides=("foo = 2.0",)),
    ],
    "multilib-native-only": [
        P("app", arch="x86_64", requires=("libx.so.1()(64bit)", "liby")),
        P("libx", arch="i686", provides=("libx.so.1()(64bit)", "liby")),
        P("libx", arch="x86_64", provides=("libx.so.1()(64bit)", "liby")),
        P("alib", arch="i686", provides=("liby",)),
    ],
    "versioned-requirement": [
        P("app", requires=("foo >= 1.5",)),
        P("foo"),
        P("foo", "2.0-1"),
        P("afoo", "3.0-1", provides=("foo = 3.0",)),
    ],
    "rich-or-by-name": [P("app", requires=("(zz or aa)",)), P("zz"), P("aa")],
    # Requirements only one package meets are met before any choice (unit propagation).
    "propagation-before-choice": [
        P("app", requires=("foo", "mid")),
        P("mid", requires=("bar",)),
        P("bar", requires=("zfoo",)),
        P("zfoo", provides=("foo",)),
        P("afoo", provides=("foo",)),
    ],
    "conflicting-provider": [
        P("app", requires=("foo",)),
        P("afoo", provides=("foo",), conflicts=("app",)),
        P("zfoo", provides=("foo",)),
    ],
    "obsoleted-dependency": [
        P("app", requires=("old",)),
        P("old"),
        P("new", "2.0-1", provides=("old = 2.0",), obsoletes=("old < 2.0",)),
    ],
    # (b if c else d) needs (d or c) while c is out: met by name order, so c, then b.
    "if-else": [P("app", requires=("(b if c else d)",)), P("b"), P("c"), P("d")],
    "if-else-condition-met": [
        P("app", requires=("(b if c else d)", "c")),
        P("b"),
        P("c"),
        P("d"),
    ],
    "unless-else": [P("app", requires=("(a unless b else c)",)), P("a"), P("b"), P("c")],
    "with-version-range": [
        P("app", requires=("(foo >= 2 with foo < 3)",)),
        P("foo", "3.0-1"),
        P("foo", "2.5-1"),
        P("foo", "1.0-1"),
    ],
    "without": [
        P("app", requires=("(pkg-foo without pkg-bad)",)),
        P("apkg", provides=("pkg-foo", "pkg-bad")),
        P("zpkg", provides=("pkg-foo",)),
    ],
    "nested-rich-with-versions": [
        P("app", requires=("((foo >= 2.0 or bar) and (baz if foo))",)),
        P("foo", "1.0-1"),
        P("bar"),
        P("baz"),
    ],
    "recommends": [
        P("app", recommends=("x", "missing", "(y and z)")),
        P("x"),
        P("y"),
        P("z", requires=("q",)),
        P("q"),
    ],
    "supplements": [
        P("app"),
        P("lang", supplements=("(app and langsupport)",)),
        P("langsupport"),
        P("app-extra", supplements=("app",)),
        P("unrelated", supplements=("other",)),
    ],
    "supplements-met-later": [
        P("app", requires=("langsupport",)),
        P("lang", supplements=("(app and langsupport)",)),
        P("langsupport"),
    ],
    "file-dependency-from-filelists": [
        P("app", requires=("/usr/share/x/data",)),
        P("zdata", files=("/usr/share/x/data",)),
        P("other", files=("/usr/share/x/other",)),
    ],
    # rpmbuild writes rpmlib() requirements versioned (createrepo drops them from primary);
    # libsolv treats those as met. (An unversioned one it refuses; we do not.)
    "rpmlib-is-implicit": [
        P(
            "app",
            requires=("rpmlib(PayloadIsZstd) <= 5.4.18-1", "rpmlib(RichDependencies) <= 4.12.0-1"),
        )
    ],
}


def _timed(load: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    value = load()
    return time.perf_counter() - start, value


def _nevras(packages: list[Package]) -> list[str]:
    nevras = []
    for package in packages:
        assert isinstance(package.meta, RpmMeta)
        nevras.append(package.meta.nevra)
    return sorted(nevras)


def _closure(repo: RpmRepository, roots: tuple[str, ...]) -> list[str]:
    return _nevras(resolve(repo, roots).packages())


def _job_id(roots: tuple[str, ...]) -> str:
    return "+".join(roots)


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private metadata cache for the whole module: nothing lands in ~/.cache."""
    directory = tmp_path_factory.mktemp("supermin-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUPERMIN_CACHE_DIR", str(directory))
        yield directory


@pytest.fixture(scope="module")
def synthetic() -> Path:
    return synthetic_rpms()


@pytest.fixture(scope="module")
def synthetic_packages(synthetic: Path) -> list[Package]:
    return load_rpm_source(synthetic / "repo")


@pytest.fixture(scope="module")
def probe_repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    top = tmp_path_factory.mktemp("probes")
    return {name: write_repodata(top / name, packages) for name, packages in PROBES.items()}


Reference = list[str] | str  # a closure, or "unsolvable: <what the tool said>"


def _reference(run: Callable[[], list[str]]) -> Reference:
    try:
        return run()
    except Unsolvable as err:
        return f"unsolvable: {err}"


@pytest.fixture(scope="module")
def references(
    synthetic: Path, probe_repos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, tuple[str, ...], bool, str], Reference]:
    """(repository, roots, weak, tool) -> what dnf or libsolv installs; run in parallel."""
    work = tmp_path_factory.mktemp("dnf")
    jobs: list[tuple[str, Path, tuple[str, ...], bool]] = []
    for roots in [*JOBS, *DIFFERENCES, ("tp-broken",)]:
        for weak in (True, False):
            jobs.append(("synthetic", synthetic / "repo", roots, weak))
    for name, path in probe_repos.items():
        for weak in (True, False):
            jobs.append((name, path, ("app",), weak))

    def run(index: int) -> list[tuple[tuple[str, tuple[str, ...], bool, str], Reference]]:
        name, path, roots, weak = jobs[index]
        scratch = work / str(index)
        return [
            (
                (name, roots, weak, "dnf"),
                _reference(lambda: dnf_closure(path, roots, weak, scratch)),
            ),
            ((name, roots, weak, "libsolv"), _reference(lambda: solv_closure(path, roots, weak))),
        ]

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = [item for found in pool.map(run, range(len(jobs))) for item in found]
    return dict(results)


# ------------------------------------------------------------------ closures vs dnf and libsolv


@pytest.mark.parametrize("weak", [True, False], ids=["weak", "no-weak"])
@pytest.mark.parametrize("roots", JOBS, ids=_job_id)
def test_synthetic_closure_matches_dnf_and_libsolv(
    roots: tuple[str, ...],
    weak: bool,
    synthetic_packages: list[Package],
    references: dict[tuple[str, tuple[str, ...], bool, str], Reference],
) -> None:
    ours = _closure(RpmRepository(synthetic_packages, "amd64", weak_deps=weak), roots)
    assert ours == references["synthetic", roots, weak, "dnf"]
    assert ours == references["synthetic", roots, weak, "libsolv"]


@pytest.mark.parametrize("roots", list(DIFFERENCES), ids=_job_id)
def test_known_difference_from_libsolv(
    roots: tuple[str, ...],
    synthetic_packages: list[Package],
    references: dict[tuple[str, tuple[str, ...], bool, str], Reference],
) -> None:
    print(f"\n{_job_id(roots)}: {DIFFERENCES[roots]}")
    for weak in (True, False):
        ours = _closure(RpmRepository(synthetic_packages, "x86_64", weak_deps=weak), roots)
        assert ours == references["synthetic", roots, weak, "dnf"] == ["tp-newthing-2.0-1.noarch"]
        assert references["synthetic", roots, weak, "libsolv"] == ["tp-legacy-1.0-1.noarch"]


@pytest.mark.parametrize("weak", [True, False], ids=["weak", "no-weak"])
@pytest.mark.parametrize("probe", list(PROBES))
def test_policy_probe_matches_dnf_and_libsolv(
    probe: str,
    weak: bool,
    probe_repos: dict[str, Path],
    references: dict[tuple[str, tuple[str, ...], bool, str], Reference],
) -> None:
    repo = RpmRepository(load_rpm_source(probe_repos[probe]), "x86_64", weak_deps=weak)
    ours = _closure(repo, ("app",))
    assert ours == references[probe, ("app",), weak, "dnf"]
    assert ours == references[probe, ("app",), weak, "libsolv"]


def test_unsatisfiable_names_requirement_and_chain(
    synthetic_packages: list[Package],
    references: dict[tuple[str, tuple[str, ...], bool, str], Reference],
    tmp_path: Path,
) -> None:
    repo = RpmRepository(synthetic_packages, "x86_64")
    with pytest.raises(ResolveError) as caught:
        resolve(repo, ["tp-broken"])
    assert "tp-nonexistent (>= 1.0)" in str(caught.value)
    assert "needed by tp-broken" in str(caught.value)
    for weak in (True, False):
        for tool in ("dnf", "libsolv"):
            found = references["synthetic", ("tp-broken",), weak, tool]
            assert isinstance(found, str), found
            assert "nothing provides tp-nonexistent >= 1.0 needed by tp-broken" in found

    chain = write_repodata(
        tmp_path / "chain",
        [P("app", requires=("mid",)), P("mid", requires=("gone >= 2",))],
    )
    with pytest.raises(ResolveError) as caught:
        resolve(RpmRepository(load_rpm_source(chain), "x86_64"), ["app"])
    assert "mid 1.0-1 needs gone (>= 2)" in str(caught.value)
    assert "app -> mid" in str(caught.value)


# ------------------------------------------------------------------ sources


def test_gzip_zstd_and_rpm_files_give_the_same_packages(synthetic: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    (pool / "SRPMS").mkdir(parents=True)
    for rpm in (synthetic / "repo").glob("*.rpm"):
        (pool / rpm.name).symlink_to(rpm)
    for srpm in (synthetic / "SRPMS").glob("*.rpm"):
        (pool / "SRPMS" / srpm.name).symlink_to(srpm)  # source packages are not offered

    sources = {
        "gzip": load_rpm_source(synthetic / "repo"),
        "zstd": load_rpm_source(synthetic / "repo-zst"),
        "rpm files": load_rpm_source(pool),
    }
    manifest = [
        line.split("\t")[1] for line in (synthetic / "MANIFEST.tsv").read_text().splitlines()
    ]
    binaries = sorted(nevra for nevra in manifest[1:] if not nevra.endswith(".src"))
    by_nevra = {}
    for kind, packages in sources.items():
        assert _nevras(packages) == binaries, kind
        by_nevra[kind] = {p.meta.nevra: p for p in packages if isinstance(p.meta, RpmMeta)}
        for package in packages:
            assert package.format == "rpm" and not package.installed
            assert package.location is not None and package.location.is_file()

    for nevra, header_package in by_nevra["rpm files"].items():
        header = header_package.meta
        assert isinstance(header, RpmMeta) and header.files_complete
        for kind in ("gzip", "zstd"):
            package = by_nevra[kind][nevra]
            meta = package.meta
            assert isinstance(meta, RpmMeta) and not meta.files_complete
            assert package.version == header_package.version
            assert package.location is not None and header_package.location is not None
            assert package.location.name == header_package.location.name
            assert {(d.name, d.op, d.version) for d in meta.provides} == {
                (d.name, d.op, d.version) for d in header.provides
            }
            # createrepo_c drops rpmlib() requirements, those the package meets itself,
            # and all but the newest libc.so.6(GLIBC_*) one.
            provided = {d.name for d in header.provides} | set(header.files)
            full = {(d.name, d.op, d.version) for d in header.requires}
            listed = {(d.name, d.op, d.version) for d in meta.requires}
            assert listed <= full
            for name, _, _ in full - listed:
                assert name.startswith(("rpmlib(", "libc.so.6(")) or name in provided, name
            # primary lists the files of /etc and */bin/ only
            assert set(meta.files) == {f for f in header.files if repodata_in_primary(f)}

    jobs = [*JOBS, ("tp-legacy",)]
    for weak in (True, False):
        closures = {
            kind: [_closure(RpmRepository(p, "x86_64", weak_deps=weak), roots) for roots in jobs]
            for kind, p in sources.items()
        }
        assert closures["gzip"] == closures["zstd"] == closures["rpm files"]


def repodata_in_primary(path: str) -> bool:
    return path.startswith("/etc/") or "bin/" in path


def test_single_rpm_file_is_a_source(synthetic: Path) -> None:
    rpm = next((synthetic / "repo").glob("tp-rich-*.rpm"))
    (package,) = load_rpm_source(rpm)
    assert (package.name, package.version, package.arch) == ("tp-rich", "1.0-1", "noarch")
    assert isinstance(package.meta, RpmMeta)
    assert [str(d) for d in package.meta.recommends] == [
        "(tp-luascripts and tp-scripts)",
        "tp-files",
    ]


def test_not_a_source(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        load_rpm_source(tmp_path / "missing")
    (tmp_path / "repodata").mkdir()
    (tmp_path / "repodata" / "repomd.xml").write_text("<repomd")
    with pytest.raises(SourceError):
        load_rpm_source(tmp_path)


def test_centos_stream_9_appstream_primary(cache_dir: Path) -> None:
    directory = shared_testdata() / "rpm" / "repodata" / "cs9-appstream"
    for stale in cache_dir.glob("rpm-primary-*"):
        stale.unlink()  # cold means cold, whatever ran before
    cold, packages = _timed(lambda: load_rpm_source(directory))
    warm, again = _timed(lambda: load_rpm_source(directory))
    built, repo = _timed(lambda: RpmRepository(packages, "x86_64"))
    print(
        f"\nCentOS Stream 9 AppStream: {len(packages)} packages; "
        f"cold {cold:.2f}s, cached {warm:.2f}s, repository {built:.2f}s"
    )
    assert len(packages) == len(again) == 17649
    assert _nevras(packages) == _nevras(again)
    rich = [
        d.name
        for p in packages
        if isinstance(p.meta, RpmMeta)
        for kind in ("requires", "conflicts", "recommends", "suggests", "supplements", "enhances")
        for d in p.meta.dependencies(kind)
        if d.is_rich
    ]
    assert len(rich) == 1395
    for text in rich:
        parse(text)  # every rich dependency of a real distribution parses

    (bind,) = [p for p in repo.requested("bind") if p.name == "bind"][:1]
    assert bind.version.startswith("32:") and bind.location is not None
    assert bind.location.name.startswith("bind-9.")
    # AppStream alone does not resolve: most of what it needs is in BaseOS.
    with pytest.raises(ResolveError) as caught:
        resolve(repo, ["bind"])
    print(f"bind from AppStream alone: {caught.value}")
    assert "needs" in str(caught.value) and "needed by bind" in str(caught.value)


def test_osbuild_zstd_repodata() -> None:
    directory = shared_testdata() / "rpm" / "repodata" / "osbuild-custom-zst"
    (package,) = load_rpm_source(directory)
    assert (package.name, package.version, package.arch) == (
        "pkg-with-no-deps",
        "1.0.0-0",
        "noarch",
    )
    assert package.location == directory.absolute() / "pkg-with-no-deps-1.0.0-0.noarch.rpm"
    repo = RpmRepository([package], "x86_64")
    assert _closure(repo, ("pkg-with-no-deps",)) == ["pkg-with-no-deps-1.0.0-0.noarch"]


# ------------------------------------------------------------------ file dependencies, rpmlib


def test_file_dependency_reads_filelists_only_when_needed(
    synthetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[frozenset[str]] = []
    owners = repodata.RepoFileLists.owners

    def spy(self: repodata.RepoFileLists, paths: frozenset[str]) -> object:
        asked.append(frozenset(paths))
        return owners(self, paths)

    monkeypatch.setattr(repodata.RepoFileLists, "owners", spy)
    repo = RpmRepository(load_rpm_source(synthetic / "repo"), "x86_64", weak_deps=True)
    assert "tp-greet-2:1.0-1.x86_64" in _closure(repo, ("tp-greet-devel", "tp-rich"))
    assert asked == []  # /bin/sh, /usr/bin/pkg-config: primary knows them

    path = "/usr/share/tp/files/hardlink-b.txt"
    (tp_files,) = [p for p in repo.candidates(Relation("tp-files"))]
    assert isinstance(tp_files.meta, RpmMeta) and path not in tp_files.meta.files
    assert repo.candidates(Relation(path)) == [tp_files]
    assert len(asked) == 1 and path in asked[0]
    assert "tp-files-1.0-1.noarch" in _closure(repo, ("tp-filedep",))
    assert len(asked) == 1  # answered once, for every file dependency of the universe


def test_rpmlib_requirements_are_implicit(synthetic: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    rpm = next((synthetic / "repo").glob("tp-rich-*.rpm"))
    shutil.copy(rpm, pool)
    (package,) = load_rpm_source(pool)
    assert isinstance(package.meta, RpmMeta)
    assert any(d.name.startswith("rpmlib(") for d in package.meta.requires)
    repo = RpmRepository([package], "x86_64")
    names = [r.name for req in repo.requirements(package) for r in req.alternatives]
    assert names and not any(name.startswith("rpmlib(") for name in names)


# ------------------------------------------------------------------ the rpm database


def test_load_rpm_installed_lists_what_dnf_installed(synthetic: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    installed = dnf_install(synthetic / "repo", ["tp-rich", "tp-perms"], root, tmp_path / "dnf")
    packages = load_rpm_installed(root)
    assert _nevras(packages) == installed == rpm_query_installed(root, tmp_path / "dnf")
    assert all(p.installed and p.location is None and p.format == "rpm" for p in packages)

    by_name = {p.name: p.meta for p in packages if isinstance(p.meta, RpmMeta)}
    assert "/etc/passwd" in by_name["tp-setup"].config_files
    assert "/etc/tp/generated.conf" in by_name["tp-perms"].ghost_files
    assert "/usr/share/tp/rich.txt" in by_name["tp-rich"].files
    assert by_name["tp-rich"].files_complete
    assert "(tp-greet-config if tp-greet)" in {str(d) for d in by_name["tp-rich"].requires}
    assert by_name["tp-greet"].epoch == 2

    # The installed set is a universe of its own: resolving its root again finds it whole.
    repo = RpmRepository(packages, "x86_64")
    assert _closure(repo, ("tp-rich", "tp-perms")) == installed

    # Where Debian's dnf leaves the database without ~/.rpmmacros: <root>/root/.rpmdb.
    (root / "root").mkdir(exist_ok=True)
    (root / "var/lib/rpm").rename(root / "root/.rpmdb")
    assert _nevras(load_rpm_installed(root)) == installed


def test_load_rpm_installed_without_database(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as caught:
        load_rpm_installed(tmp_path)
    assert "no rpm database" in str(caught.value)
    assert "\n" not in caught.value.message


# ------------------------------------------------------------------ rich dependencies


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("foo", Simple("foo")),
        ("foo >= 1:2.0-3", Simple("foo", ">=", "1:2.0-3")),
        ("(foo)", Simple("foo")),
        ("(a or b)", Rich("or", (Simple("a"), Simple("b")))),
        ("(a and b and c)", Rich("and", (Simple("a"), Simple("b"), Simple("c")))),
        ("(foo >= 1.0 or bar)", Rich("or", (Simple("foo", ">=", "1.0"), Simple("bar")))),
        ("(a if b)", Rich("if", (Simple("a"), Simple("b")))),
        ("(a if b else c)", Rich("if", (Simple("a"), Simple("b"), Simple("c")))),
        ("(a unless b)", Rich("unless", (Simple("a"), Simple("b")))),
        ("(a unless b else c)", Rich("unless", (Simple("a"), Simple("b"), Simple("c")))),
        (
            "(tp-greet >= 2:1.0 with tp-greet < 2:2.0)",
            Rich("with", (Simple("tp-greet", ">=", "2:1.0"), Simple("tp-greet", "<", "2:2.0"))),
        ),
        ("(a without b)", Rich("without", (Simple("a"), Simple("b")))),
        (
            "(libc.so.6()(64bit) or libc.so.6(GLIBC_2.34)(64bit))",
            Rich("or", (Simple("libc.so.6()(64bit)"), Simple("libc.so.6(GLIBC_2.34)(64bit)"))),
        ),
        (
            "((a with b) or (c if (d and e >= 2)))",
            Rich(
                "or",
                (
                    Rich("with", (Simple("a"), Simple("b"))),
                    Rich("if", (Simple("c"), Rich("and", (Simple("d"), Simple("e", ">=", "2"))))),
                ),
            ),
        ),
        ("(a =< 2 or b == 3)", Rich("or", (Simple("a", "<=", "2"), Simple("b", "=", "3")))),
    ],
)
def test_rich_parser(text: str, expected: object) -> None:
    node = parse(text)
    assert node == expected
    assert parse(str(node)) == node  # printed back as rpm spells it


@pytest.mark.parametrize(
    "text",
    ["(a or)", "()", "(a", "(a and b or c)", "(a foo b)", "(a else b)", "(a if b else)", "(a >=)"],
)
def test_rich_parser_refuses(text: str) -> None:
    with pytest.raises(RichDepError):
        parse(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(a and b)", [("a", ()), ("b", ())]),
        ("(a or (b and c))", [("(a or b)", ()), ("(a or c)", ())]),
        ("(a if b)", [("a", ("b",))]),
        ("(a if b else c)", [("a", ("b",)), ("(b or c)", ())]),
        ("(a unless b)", [("a", ())]),  # "and not b" cannot be enforced: dropped
        ("(a unless b else c)", [("(a or c)", ()), ("(a or b)", ()), ("c", ("b",))]),
        ("((a if b) or c)", [("(a or c)", ("b",))]),
        ("(x if (y and (z or w)))", [("x", ("(z or w)", "y"))]),
        ("(a with b)", [("(a with b)", ())]),
    ],
)
def test_rich_clauses(text: str, expected: list[tuple[str, tuple[str, ...]]]) -> None:
    found = [(str(c.goal), tuple(map(str, c.when))) for c in clauses(parse(text))]
    assert found == expected


def test_rich_triggers_and_single_package_matching() -> None:
    found = [
        (list(map(str, t.holds)), list(map(str, t.fails)))
        for t in triggers(parse("((driverA and driverA-tools) unless driverB)"))
    ]
    assert found == [(["driverA", "driverA-tools"], ["driverB"])]
    assert [list(map(str, t.holds)) for t in triggers(parse("(foo and (cz or all))"))] == [
        ["(cz or all)", "foo"]
    ]
    provides = {"a", "b"}
    assert matches(parse("(a with b)"), lambda s: s.name in provides)
    assert not matches(parse("(a without b)"), lambda s: s.name in provides)
    assert matches(parse("(c or (a and b))"), lambda s: s.name in provides)


def test_arch_names() -> None:
    assert [rpm_arch(a) for a in ("amd64", "arm64", "i386", "ppc64el", "x86_64", "s390x")] == [
        "x86_64",
        "aarch64",
        "i686",
        "ppc64le",
        "x86_64",
        "s390x",
    ]


# ------------------------------------------------------------------ the resolver's fixpoint


class _Toy:
    """A format-free repository: name -> requirements, every package its own provider."""

    def __init__(self, requirements: dict[str, list[Requirement]]) -> None:
        self.packages = {name: Package(name, "1", "all", "toy", "toy") for name in requirements}
        self.needs = requirements

    def candidates(self, relation: Relation) -> list[Package]:
        found = self.packages.get(relation.name)
        return [found] if found else []

    def requirements(self, package: Package) -> list[Requirement]:
        return self.needs[package.name]

    def conflicts(self, package: Package, other: Package) -> bool:
        return False

    def satisfies(self, package: Package, relation: Relation) -> bool:
        return package.name == relation.name

    def names(self) -> Iterator[str]:
        return iter(self.packages)


def _need(
    name: str, when: tuple[str, ...] = (), unless: tuple[str, ...] = (), weak: bool = False
) -> Requirement:
    return Requirement(
        (Relation(name),),
        when=tuple(map(Relation, when)),
        unless=tuple(map(Relation, unless)),
        weak=weak,
    )


def test_conditional_requirements_settle_to_a_fixpoint() -> None:
    toy = _Toy(
        {
            # "b if c": c only comes in through d, which comes in late.
            "app": [_need("b", when=("c",)), _need("d"), _need("x", unless=("d",))],
            "b": [],
            "c": [_need("e", when=("b",))],
            "d": [_need("c")],
            "e": [],
            "x": [],
            "w": [],
            "lonely": [_need("w", when=("nothing",)), _need("missing", weak=True)],
        }
    )
    assert sorted(resolve(toy, ["app"]).graph) == ["app", "b", "c", "d", "e"]
    # A condition never met applies nothing; a weak requirement nothing meets is ignored.
    assert sorted(resolve(toy, ["lonely"]).graph) == ["lonely"]
    with pytest.raises(ResolveError) as caught:
        resolve(_Toy({"app": [_need("missing", when=("app",))]}), ["app"])
    assert "missing if app" in str(caught.value)


def test_weak_requirements_come_after_hard_ones() -> None:
    toy = _Toy(
        {
            "app": [_need("extra", weak=True), _need("lib")],
            "extra": [_need("helper")],
            "lib": [],
            "helper": [],
        }
    )
    resolution = resolve(toy, ["app"])
    assert list(resolution.graph) == ["app", "lib", "extra", "helper"]
    assert resolution.graph.edges["app", "extra"]["weak"]
    assert not resolution.graph.edges["app", "lib"]["weak"]
