"""An RPM appliance built on this Debian machine, as uid 65534 without network."""

from __future__ import annotations

import subprocess
from pathlib import Path

import networkx as nx
import pytest
from support.product import build_in, listing, prepare_in, scratch_dir, supermin_here
from support.rpmdata import dnf_install, synthetic_rpms

from supermin.firstboot import FIRSTBOOT_DIR, read_manifest
from supermin.outputs.mtree import read_mtree

ROOTS = ["tp-files", "tp-luascripts", "tp-perms", "tp-rich", "tp-scripts"]
FILE_GHOST = 1 << 6


def _query(rpm: Path, fmt: str) -> list[str]:
    return subprocess.run(
        ["rpm", "-qp", "--nosignature", "--qf", fmt, str(rpm)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()


def _closure_from_verbose(stderr: str) -> dict[str, str]:
    """name -> version from `-v`'s closure listing ("  NAME-VERSION.ARCH: why")."""
    found = {}
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if "closure:" in line)
    for line in lines[start + 1 :]:
        if not line.startswith("supermin:   "):
            break
        nva = line.split()[1].rstrip(":")
        name_version, _, _arch = nva.rpartition(".")
        name, _, version = name_version.rpartition("-")
        name, _, upstream = name.rpartition("-")
        found[name] = f"{upstream}-{version}".split(":")[-1]
    return found


@pytest.fixture(scope="module")
def built() -> tuple[Path, dict[str, Path], str]:
    repo = synthetic_rpms() / "repo"
    work = scratch_dir("rpm-e2e")
    prepare_in(work, ROOTS, repo)
    assert (work / "d/packages").read_text() == "".join(f"{r}\n" for r in ROOTS)
    result = build_in(work, repo, extra=["-v"])
    closure = _closure_from_verbose(result.stderr)
    rpms = {}
    for rpm in sorted(repo.glob("**/*.rpm")):
        name, version = _query(rpm, "%{NAME} %{VERSION}-%{RELEASE}")[0].split()
        if closure.get(name) == version:
            rpms[name] = rpm
    assert set(rpms) == set(closure), (closure, rpms)
    return work, rpms, result.stderr


def test_lua_scriptlets_are_reported_once(built: tuple[Path, dict[str, Path], str]) -> None:
    assert built[2].count("Lua scriptlets are stored") == 1


def test_files_of_the_closure_with_rpm_modes_and_owners(
    built: tuple[Path, dict[str, Path], str],
) -> None:
    work, rpms, _ = built
    records = {r["path"]: r for r in read_mtree(work / "c.mtree")}
    checked = 0
    for rpm in rpms.values():
        ghosts = {
            line.rsplit("\t", 1)[0]
            for line in _query(rpm, "[%{FILENAMES}\t%{FILEFLAGS}\n]")
            if int(line.rsplit("\t", 1)[1]) & FILE_GHOST
        }
        dump = subprocess.run(
            ["rpm", "-qp", "--nosignature", "--dump", str(rpm)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in dump.splitlines():
            fields = line.rsplit(" ", 10)
            path, size, mode, owner, group, link = (
                fields[0],
                int(fields[1]),
                int(fields[4], 8),
                fields[5],
                fields[6],
                fields[10],
            )
            if path in ghosts:
                continue
            record = records[path]
            assert record["mode"] == mode & 0o7777, path
            assert (record["uname"], record["gname"]) == (owner, group), path
            if record["type"] == "file":
                assert record["size"] == size, path
            if record["type"] == "link":
                assert record["link"] == link, path
            checked += 1
    assert checked > 30


def test_scriptlets_stored_in_dependency_order(built: tuple[Path, dict[str, Path], str]) -> None:
    work, rpms, _ = built
    manifest = read_manifest((work / "c" / str(FIRSTBOOT_DIR).lstrip("/") / "manifest").read_text())
    assert {s["phase"] for s in manifest} >= {"pre", "post", "posttrans", "pretrans"}
    assert all(s["arguments"] in ("1", "") for s in manifest)
    provides = {
        name: set(_query(rpm, "[%{PROVIDENAME}\n]")) | set(_query(rpm, "[%{FILENAMES}\n]"))
        for name, rpm in rpms.items()
    }
    graph = nx.DiGraph()
    graph.add_nodes_from(rpms)
    for name, rpm in rpms.items():
        for requirement in _query(rpm, "[%{REQUIRENAME}\n]"):
            for other, offered in provides.items():
                if other != name and requirement in offered:
                    graph.add_edge(name, other)
    component = {n: i for i, c in enumerate(nx.strongly_connected_components(graph)) for n in c}
    step = {}
    for entry in manifest:
        step.setdefault((entry["package"], entry["phase"]), int(entry["step"]))
    checked = 0
    for a in graph:
        for b in nx.descendants(graph, a):
            if component[a] == component[b]:
                continue
            for phase in ("pretrans", "pre", "post", "posttrans"):
                if (a, phase) in step and (b, phase) in step:
                    assert step[(b, phase)] < step[(a, phase)], (a, b, phase)
                    checked += 1
    # rpm runs each package's %pre and %post together, the next package's after them.
    rank = {"pretrans": 0, "pre": 1, "post": 1, "posttrans": 2}
    stages = [rank[s["phase"]] for s in manifest]
    assert stages == sorted(stages)
    assert checked >= 0
    assert not (work / "c/var/lib/tp/scriptlets.log").exists(), "nothing may run at build time"


def test_sysroot_host_mode_has_the_archive_builds_files(tmp_path: Path) -> None:
    """A root populated by a real `dnf install` is a package source through --sysroot."""
    repo = synthetic_rpms() / "repo"
    work = scratch_dir("rpm-sysroot")
    roots = ["tp-perms", "tp-rich"]
    dnf_install(repo, roots, work / "root", tmp_path / "dnf")
    for label, source in (
        ("host", ["--sysroot", str(work / "root")]),
        ("archive", ["--repo", str(repo)]),
    ):
        supermin_here(["prepare", *roots, *source, "-o", str(work / f"d-{label}")])
        supermin_here(
            ["build", str(work / f"d-{label}"), *source, "-f", "chroot", "-o", str(work / label)]
        )
    host, archive = listing(work / "host"), listing(work / "archive")
    manifest = (work / "host" / str(FIRSTBOOT_DIR).lstrip("/") / "manifest").read_text()
    assert read_manifest(manifest) == [], "installed packages were configured: nothing deferred"
    deferred = {p for p in archive if p.startswith(str(FIRSTBOOT_DIR))}
    ghosts = set()
    for rpm in repo.glob("**/*.rpm"):
        ghosts |= {
            line.rsplit("\t", 1)[0]
            for line in _query(rpm, "[%{FILENAMES}\t%{FILEFLAGS}\n]")
            if int(line.rsplit("\t", 1)[1]) & FILE_GHOST
        }
    compared = 0
    for path, description in archive.items():
        if path in deferred or path in ghosts:
            continue
        assert host.get(path) == description, path
        compared += 1
    assert compared > 30
    assert set(host) - set(archive) <= ghosts | {str(FIRSTBOOT_DIR), *deferred}, sorted(
        set(host) - set(archive)
    )
