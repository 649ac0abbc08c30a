"""Real Debian 12 packages to a chroot appliance, end to end, unprivileged and offline."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import networkx as nx
import pytest
from support.debdata import apt_simulate, real_pool, synthetic_debs
from support.product import listing, scratch_dir, supermin_nobody

from supermin.firstboot import FIRSTBOOT_DIR, read_manifest
from supermin.outputs.mtree import read_mtree

ROOTS = ["bash", "coreutils", "hello"]


@pytest.fixture(scope="module")
def pool() -> Path:
    return real_pool(ROOTS)


@pytest.fixture(scope="module")
def built(pool: Path) -> Path:
    """prepare + build as uid 65534 inside `unshare -n`."""
    work = scratch_dir("e2e")
    supermin_nobody(["prepare", "bash", "coreutils", "--repo", str(pool), "-o", str(work / "d")])
    supermin_nobody(
        ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot", "-o", str(work / "c")]
    )
    return work


def test_prepare_records_only_the_roots(built: Path) -> None:
    assert (built / "d" / "packages").read_text() == "bash\ncoreutils\n"
    listed = subprocess.run(
        ["tar", "-tzf", str(built / "d" / "base.tar.gz")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout == ""


def test_appliance_runs_coreutils_in_bash(built: Path) -> None:
    run = subprocess.run(
        ["chroot", str(built / "c"), "/bin/bash", "-c", "ls --version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "GNU coreutils" in run.stdout


def test_files_owned_by_the_builder_and_true_owners_in_mtree(built: Path) -> None:
    assert (built / "c" / "bin" / "bash").stat().st_uid == 65534
    records = {r["path"]: r for r in read_mtree(built / "c.mtree")}
    assert records["/bin/bash"]["uid"] == 0
    assert records["/bin/bash"]["uname"] == "root"


def _dpkg_owners(deb: Path) -> dict[str, tuple[str, str]]:
    owners = {}
    out = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        fields = line.split(None, 5)
        user, group = fields[1].split("/")
        name = fields[5].split(" -> ")[0].split(" link to ")[0]
        path = "/" + name.removeprefix("./").rstrip("/")
        owners[path if path != "/" else "/"] = (user, group)
    return owners


def test_file_for_file_equal_to_dpkg_deb(built: Path, pool: Path, tmp_path: Path) -> None:
    ours = listing(built / "c")
    records = {r["path"]: r for r in read_mtree(built / "c.mtree")}
    closure = apt_simulate(["bash", "coreutils"])
    debs = sorted(d for d in pool.glob("*.deb") if d.name.split("_")[0] in closure)
    assert len(debs) == len(closure) >= 10
    for deb in debs:
        reference = tmp_path / deb.stem
        subprocess.run(["dpkg-deb", "-x", str(deb), str(reference)], check=True)
        theirs = listing(reference)
        for path, description in theirs.items():
            assert path in ours, f"{path} of {deb.name} missing from the appliance"
            assert ours[path] == description, f"{path} of {deb.name} differs"
        for path, (user, group) in _dpkg_owners(deb).items():
            if path == "/":
                continue
            assert (records[path]["uname"], records[path]["gname"]) == (user, group), path


def test_scripts_are_stored_in_dependency_order_not_run(built: Path) -> None:
    manifest = read_manifest(
        (built / "c" / str(FIRSTBOOT_DIR).lstrip("/") / "manifest").read_text()
    )
    assert manifest, "the closure has maintainer scripts (e.g. bash's postinst)"
    for step in manifest:
        script = built / "c" / str(FIRSTBOOT_DIR).lstrip("/") / step["script"]
        assert script.is_file()
    phases = [step["phase"] for step in manifest]
    assert phases == sorted(phases, key=lambda p: {"preinst": 0, "postinst": 1}[p])


def _relations(deb: Path) -> list[list[str]]:
    fields = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Depends", "Pre-Depends"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    groups = []
    for line in fields.replace("\n ", " ").splitlines():
        _, _, value = line.partition(":")
        for group in value.split(","):
            names = [alt.split("(")[0].split(":")[0].strip() for alt in group.split("|")]
            groups.append([n for n in names if n])
    return groups


def assert_scripts_follow_dependencies(appliance: Path, debs: dict[str, Path]) -> int:
    """Judge the manifest order by the packages' own Depends/Pre-Depends (via dpkg-deb)."""
    manifest = read_manifest((appliance / str(FIRSTBOOT_DIR).lstrip("/") / "manifest").read_text())
    graph = nx.DiGraph()
    graph.add_nodes_from(debs)
    for name, deb in debs.items():
        for group in _relations(deb):
            for alternative in group:
                if alternative in debs and alternative != name:
                    graph.add_edge(name, alternative)
                    break
    component = {n: i for i, c in enumerate(nx.strongly_connected_components(graph)) for n in c}
    position = {(s["package"], s["phase"]): int(s["step"]) for s in manifest}
    checked = 0
    pairs = [(a, b) for a in graph for b in nx.descendants(graph, a)]
    for a, b in pairs:
        if component[a] == component[b]:
            continue
        for phase in ("preinst", "postinst"):
            if (a, phase) in position and (b, phase) in position:
                assert position[(b, phase)] < position[(a, phase)], (a, b, phase)
                checked += 1
    return checked


def test_manifest_order_follows_real_dependency_edges(built: Path, pool: Path) -> None:
    closure = apt_simulate(["bash", "coreutils"])
    debs = {d.name.split("_")[0]: d for d in pool.glob("*.deb") if d.name.split("_")[0] in closure}
    assert assert_scripts_follow_dependencies(built / "c", debs) >= 1


SYNTHETIC_ROOTS = ["tp-rich", "tp-perms", "tp-files", "tp-triggers", "tp-libgreet-dev", "tp-mover"]
SYNTHETIC_CLOSURE = {
    "tp-rich": "1.0-1",
    "tp-plugin-a": "1.0-1",
    "tp-greet": "1:1.0-1",
    "tp-config-default": "1.0-1",
    "tp-libgreet1": "1.0-1",
    "tp-base-files": "1.0-1",
    "tp-busybox": "1:1.35.0-1",
    "tp-perms": "1.0-1",
    "tp-files": "1.0-1",
    "tp-triggers": "1.0-1",
    "tp-libgreet-dev": "1.0-1",
    "tp-mover": "2.0-1",
}


def test_synthetic_feature_set_equals_dpkg_deb(tmp_path: Path) -> None:
    """xz/gzip/zstd/none members, setuid/setgid, owners, hardlinks, odd names, epochs."""
    repo = synthetic_debs()
    work = scratch_dir("synthetic-set")
    supermin_nobody(["prepare", *SYNTHETIC_ROOTS, "--repo", str(repo), "-o", str(work / "d")])
    result = supermin_nobody(
        ["build", "-v", str(work / "d"), "--repo", str(repo), "-f", "chroot", "-o", str(work / "c")]
    )
    chosen = {
        name: version
        for name, version, *_ in re.findall(
            r"^supermin:\s+(tp-[a-z0-9-]+?)-(\d\S*?)\.(?:all|amd64)\b", result.stderr, re.M
        )
    }
    assert chosen == SYNTHETIC_CLOSURE
    debs = {}
    for deb in sorted((repo / "pool").glob("*.deb")):
        name = deb.name.split("_")[0]
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if SYNTHETIC_CLOSURE.get(name) == version:
            debs[name] = deb
    assert set(debs) == set(SYNTHETIC_CLOSURE)
    ours = listing(work / "c")
    records = {r["path"]: r for r in read_mtree(work / "c.mtree")}
    seen: dict[str, str] = {}
    for name, deb in debs.items():
        reference = tmp_path / name
        subprocess.run(["dpkg-deb", "-x", str(deb), str(reference)], check=True)
        owners = _dpkg_owners(deb)
        for path, description in listing(reference).items():
            if description[0] != "dir" and path in seen:
                continue  # shipped by two packages: the later one wins, as with dpkg -i order
            seen[path] = name
            assert ours.get(path) == description, f"{path} of {deb.name}"
            assert (records[path]["uname"], records[path]["gname"]) == owners[path], path
    files = work / "c/usr/share/tp/files"
    inodes = {
        p: (files / p).stat().st_ino
        for p in ("hardlink-a.txt", "hardlink-b.txt", "subdir/hardlink-c.txt")
    }
    assert len(set(inodes.values())) == 1
    assert (files / "hardlink-a.txt").stat().st_nlink == 3
    assert records["/usr/libexec/tp/suid-helper"]["mode"] == 0o4755
    assert records["/var/lib/tp/private"]["uname"] == "daemon"
    assert_scripts_follow_dependencies(work / "c", debs)  # no pair of these has scripts on both
