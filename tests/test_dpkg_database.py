"""Debian appliances holding dpkg get a real dpkg database, and dpkg configures them.

The database is checked with Debian's own tools: `dpkg --audit` and `dpkg-query`
must parse it, its file lists and md5sums must be the packages' own. Then, as
root, the first-boot runner runs inside a chroot of a Debian 12 base system
(every Priority: required package): the preinsts, then `dpkg --configure -a`,
after which dpkg reports every package installed and nothing to audit.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from support.debdata import real_pool, required_roots
from support.product import build_in, prepare_in, scratch_dir, supermin_here

from supermin.firstboot import read_manifest

SMALL = ["bash", "coreutils", "dpkg"]


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def _debs(pool: Path) -> dict[str, Path]:
    return {deb.name.split("_", 1)[0]: deb for deb in pool.rglob("*.deb")}


def _status(root: Path) -> dict[str, str]:
    out = _run("dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package} ${Status}\n")
    return dict(line.split(" ", 1) for line in out.splitlines())


@pytest.fixture(scope="module")
def small() -> tuple[Path, Path]:
    """bash + coreutils + dpkg, built as uid 65534 into a chroot."""
    pool = real_pool(SMALL)
    work = scratch_dir("dpkgdb")
    prepare_in(work, SMALL, pool)
    build_in(work, pool)
    return work / "c", pool


def test_dpkg_audit_sees_every_package_unpacked(small: tuple[Path, Path]) -> None:
    root, pool = small
    audit = _run("dpkg", f"--root={root}", "--audit")
    assert "unpacked but not yet configured" in audit
    listed = {line.split()[0].split(":")[0] for line in audit.splitlines() if line.startswith(" ")}
    assert listed == set(_debs(pool))


def test_dpkg_query_lists_the_closure_install_ok_unpacked(small: tuple[Path, Path]) -> None:
    root, pool = small
    assert _status(root) == {name: "install ok unpacked" for name in _debs(pool)}
    # The full control stanza, in dpkg's field order, with conffiles' md5s.
    status = (root / "var/lib/dpkg/status").read_text()
    bash = next(s for s in status.split("\n\n") if s.startswith("Package: bash\n"))
    names = [line.split(":")[0] for line in bash.splitlines() if not line.startswith(" ")]
    assert names[:4] == ["Package", "Essential", "Status", "Priority"]
    assert names.index("Version") < names.index("Depends") < names.index("Description")
    conffile = re.search(r"^ /etc/bash\.bashrc ([0-9a-f]{32})$", bash, re.M)
    assert conffile, bash
    assert _run("md5sum", str(root / "etc/bash.bashrc")).split()[0] == conffile[1]


def test_info_files_are_the_packages_own(small: tuple[Path, Path]) -> None:
    root, pool = small
    info = root / "var/lib/dpkg/info"
    assert (info / "format").read_text() == "1\n"
    for name, deb in _debs(pool).items():
        multiarch = _run("dpkg-deb", "-f", str(deb), "Multi-Arch").strip()
        stem = f"{name}:amd64" if multiarch == "same" else name
        tar = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as members:
            paths = ["/" + m.name.removeprefix("./").rstrip("/") for m in members.getmembers()]
        expected = ["/." if path == "/" else path for path in paths]
        if expected[0] != "/.":
            expected.insert(0, "/.")
        assert (info / f"{stem}.list").read_text().splitlines() == expected, name
        control = scratch_dir(f"control-{name}")
        subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
        for member in control.iterdir():
            if member.name != "control":
                assert (info / f"{stem}.{member.name}").read_bytes() == member.read_bytes()
                executable = os.access(info / f"{stem}.{member.name}", os.X_OK)
                assert executable == os.access(member, os.X_OK), member.name
        shutil.rmtree(control)


def test_first_boot_runs_preinsts_then_dpkg_configure(small: tuple[Path, Path]) -> None:
    root, _ = small
    manifest = (root / "usr/lib/supermin/firstboot/manifest").read_text()
    steps = read_manifest(manifest)
    assert {s["phase"] for s in steps[:-1]} == {"preinst"}
    assert all(s["arguments"] == "install" for s in steps[:-1])
    last = steps[-1]
    assert (last["package"], last["phase"], last["interpreter"]) == (
        "dpkg",
        "configure",
        "/usr/bin/dpkg",
    )
    assert (last["arguments"], last["script"]) == ("--configure -a", "")


def test_dpkg_configures_a_debian_base_system_in_a_chroot() -> None:
    """As root: the first-boot runner in a chroot; dpkg accepts the database."""
    roots = required_roots()
    pool = real_pool(roots)
    work = scratch_dir("dpkgdb-required")
    supermin_here(["prepare", *roots, "--repo", str(pool), "-o", str(work / "d")])
    build = ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot"]
    supermin_here([*build, "-o", str(work / "c")])
    root = work / "c"
    before = _status(root)
    assert set(before.values()) == {"install ok unpacked"}
    # A private mount namespace: /proc and /dev go away with it, whatever happens.
    start = time.monotonic()
    run = subprocess.run(
        ["unshare", "--mount", "--fork", "sh", "-ec"]
        + [
            'mkdir -p "$1/proc" "$1/dev"; mount -t proc proc "$1/proc";'
            'mount --rbind /dev "$1/dev"; exec chroot "$1" /bin/sh /usr/lib/supermin/firstboot/run',
            "sh",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"},
    )
    elapsed = time.monotonic() - start
    log = (root / "var/log/supermin-firstboot.log").read_text()
    assert run.returncode == 0, run.stdout + run.stderr + log
    print(f"\n{len(before)} packages configured in a chroot in {elapsed:.1f}s")
    assert _run("dpkg", f"--root={root}", "--audit") == ""
    assert _status(root) == {name: "install ok installed" for name in before}
    assert (root / "etc/passwd").is_file()  # base-passwd's preinst
    started = re.findall(r"^== step (\d+): \S+ \S+ \S+ \(", log, re.M)
    assert started and re.findall(r"^== step (\d+): status 0$", log, re.M) == started
    assert re.search(
        r"^== step \d+: dpkg \S+ configure \(/usr/bin/dpkg --configure -a\)", log, re.M
    )
    assert not os.path.ismount(root / "proc")
