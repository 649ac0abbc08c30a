"""Smoke tests for tests/support: the helpers the product tests are built on."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import debdata, privileges

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="drops privileges only as root")


def _deb_field(deb: Path, field: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True, check=True
    ).stdout.strip()


def _deb_paths(deb: Path) -> set[str]:
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    # The last column of the tar-style listing is the path ("./usr/...").
    return {line.split()[-1] for line in listing.splitlines()}


def test_apt_simulate_resolves_hello() -> None:
    closure = debdata.apt_simulate(["hello"])
    assert {"hello", "libc6"} <= closure


def test_debian_index_is_uncompressed_packages_file() -> None:
    index = debdata.debian_index()
    assert index.name.endswith(f"_bookworm_main_binary-{debdata.host_arch()}_Packages")
    with index.open("rb") as fh:
        assert fh.read(9) == b"Package: "


def test_real_pool_holds_the_closure() -> None:
    pool = debdata.real_pool(["hello"])
    assert stat.S_IMODE(pool.stat().st_mode) == 0o755
    [hello] = pool.glob("hello_*.deb")
    assert stat.S_IMODE(hello.stat().st_mode) == 0o644
    assert _deb_field(hello, "Package") == "hello"
    names = {deb.name.split("_", 1)[0] for deb in pool.glob("*.deb")}
    assert names == debdata.apt_simulate(["hello"])
    # Reuse: a second call returns the same directory without downloading again.
    before = {deb.name: deb.stat().st_mtime_ns for deb in pool.glob("*.deb")}
    assert debdata.real_pool(["hello"]) == pool
    assert {deb.name: deb.stat().st_mtime_ns for deb in pool.glob("*.deb")} == before


@needs_root
def test_real_pool_readable_by_nobody() -> None:
    [hello] = debdata.real_pool(["hello"]).glob("hello_*.deb")
    proc = privileges.run_unprivileged(["dpkg-deb", "-f", str(hello), "Package"])
    assert proc.stdout.strip() == "hello"


def test_update_debs_move_data_to_usr(tmp_path: Path) -> None:
    old = debdata.build_update_debs(tmp_path, "1.0")
    new = debdata.build_update_debs(tmp_path, "1.1")
    assert old.name == "tp-update_1.0_all.deb"
    assert new.name == "tp-update_1.1_all.deb"
    assert _deb_field(new, "Version") == "1.1"
    old_paths, new_paths = _deb_paths(old), _deb_paths(new)
    readme = "./usr/share/doc/tp-update/README"
    assert {"./lib/tp-update/data.txt", readme} <= old_paths
    assert {"./usr/lib/tp-update/data.txt", readme} <= new_paths
    assert not any(path.startswith("./lib/") for path in new_paths)
    control = subprocess.run(
        ["dpkg-deb", "-I", str(new), "postinst"], capture_output=True, text=True, check=True
    ).stdout
    assert "/var/lib/tp/update.log" in control


def test_build_deb_fields_and_flat_index(tmp_path: Path) -> None:
    deb = debdata.build_deb(
        tmp_path,
        "tp-demo",
        "2:1.0-1",
        depends="tp-update (>= 1.0)",
        provides="tp-virtual",
        files={"/usr/bin/tp-demo": b"#!/bin/sh\n"},
        modes={"/usr/bin/tp-demo": 0o755},
    )
    assert deb.name == "tp-demo_1.0-1_all.deb"
    assert _deb_field(deb, "Depends") == "tp-update (>= 1.0)"
    debdata.build_update_debs(tmp_path, "1.0")
    index = debdata.write_flat_index(tmp_path).read_text()
    assert "Package: tp-demo\n" in index
    assert "Package: tp-update\n" in index
    assert "Filename: ./tp-demo_1.0-1_all.deb\n" in index


def test_synthetic_debs() -> None:
    out = debdata.synthetic_debs()
    debs = list((out / "pool").glob("*.deb"))
    assert len(debs) >= 21
    assert (out / "Packages").is_file()
    assert all(deb.stat().st_mode & stat.S_IROTH for deb in debs)


@needs_root
def test_run_unprivileged_is_nobody() -> None:
    proc = privileges.run_unprivileged(["id", "-u"])
    assert proc.stdout.strip() == str(privileges.NOBODY)


def test_run_unprivileged_has_no_network() -> None:
    if privileges.unprivileged_offline(["true"])[:1] != ["unshare"]:
        pytest.skip("no network namespace available to this user")
    probe = "import socket, sys; socket.create_connection((sys.argv[1], 80), timeout=3)"
    proc = privileges.run_unprivileged([sys.executable, "-c", probe, "deb.debian.org"], check=False)
    assert proc.returncode != 0
    # Failing name resolution, not some unrelated error such as an unreadable interpreter.
    assert "socket.gaierror" in proc.stderr
    # Without DNS in the way: the address itself must be unreachable too.
    try:
        address = socket.gethostbyname("deb.debian.org")
    except OSError:
        return
    proc = privileges.run_unprivileged([sys.executable, "-c", probe, address], check=False)
    assert proc.returncode != 0
    assert "OSError" in proc.stderr


def test_run_unprivileged_reports_output() -> None:
    with pytest.raises(AssertionError, match="(?s)stdout.*out-text.*stderr.*err-text"):
        privileges.run_unprivileged(["sh", "-c", "echo out-text; echo err-text >&2; exit 3"])


def test_make_world_dir(tmp_path: Path) -> None:
    made = privileges.make_world_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(made.stat().st_mode) == 0o777
    assert stat.S_IMODE(made.parent.stat().st_mode) == 0o755
