"""Real Debian 12 packages to a chroot appliance, end to end, unprivileged and offline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.debdata import apt_simulate, real_pool
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
