"""Rebuilds after updates, host mode, repository kinds and supermin.d inputs."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from support.debdata import build_deb, build_update_debs, real_pool, write_flat_index
from support.product import build_in, prepare_in, scratch_dir, supermin_here, supermin_nobody


def test_security_update_picked_up_by_rebuild_without_prepare() -> None:
    work = scratch_dir("update")
    pool = work / "pool"
    build_update_debs(pool, "1.0")
    prepare_in(work, ["tp-update"], pool)
    supermin_nobody(
        ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot", "-o", str(work / "c")]
    )
    assert (work / "c/lib/tp-update/data.txt").read_text() == "data 1.0\n"
    for old in pool.glob("*.deb"):
        old.unlink()
    build_update_debs(pool, "1.1")
    supermin_nobody(
        ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot", "-o", str(work / "c")]
    )
    assert (work / "c/usr/lib/tp-update/data.txt").read_text() == "data 1.1\n"
    assert not (work / "c/lib/tp-update").exists()
    manifest = (work / "c/usr/lib/supermin/firstboot/manifest").read_text()
    assert "tp-update\t1.1\tpostinst" in manifest


def test_highest_version_wins_when_both_are_offered() -> None:
    work = scratch_dir("both")
    build_update_debs(work / "pool", "1.0")
    build_update_debs(work / "pool", "1.1")
    prepare_in(work, ["tp-update"], work / "pool")
    supermin_nobody(
        ["build", str(work / "d"), "--repo", str(work / "pool"), "-f", "fs", "-o", str(work / "c")]
    )
    assert (work / "c/usr/lib/tp-update/data.txt").is_file()


def test_usrmerge_symlink_from_a_base_tarball_redirects_package_files() -> None:
    work = scratch_dir("usrmerge")
    build_update_debs(work / "pool", "1.0")
    prepare_in(work, ["tp-update"], work / "pool")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        link = tarfile.TarInfo("lib")
        link.type, link.linkname = tarfile.SYMTYPE, "usr/lib"
        tar.addfile(link)
    (work / "d" / "usrmerge.tar.gz").write_bytes(gzip.compress(raw.getvalue()))
    build_in(work, work / "pool")
    assert (work / "c/lib").is_symlink()
    assert (work / "c/usr/lib/tp-update/data.txt").read_text() == "data 1.0\n"


def test_flat_repository_and_dists_layout_are_detected() -> None:
    pool = real_pool(["hello"])
    work = scratch_dir("repos")
    flat = work / "flat"
    shutil.copytree(pool, flat)
    write_flat_index(flat)
    dists = work / "archive"
    (dists / "pool").mkdir(parents=True)
    for deb in pool.glob("*.deb"):
        shutil.copy(deb, dists / "pool")
    index = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"],
        cwd=dists,
        capture_output=True,
        check=True,
    ).stdout
    binary = dists / "dists/bookworm/main/binary-amd64"
    binary.mkdir(parents=True)
    (binary / "Packages.gz").write_bytes(gzip.compress(index))
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    for repo in (flat, dists):
        out = work / f"out-{repo.name}"
        supermin_nobody(["prepare", "hello", "--repo", str(repo), "-o", str(out / "d")])
        supermin_nobody(
            ["build", str(out / "d"), "--repo", str(repo), "-f", "chroot", "-o", str(out / "c")]
        )
        assert (out / "c/usr/bin/hello").is_file()


def test_supermin5_spelling_hostfiles_and_excludes() -> None:
    pool = real_pool(["hello"])
    work = scratch_dir("spelling")
    supermin_nobody(["--prepare", "hello", "--repo", str(pool), "-o", str(work / "d") + "/"])
    (work / "d" / "hostfiles").write_text("/etc/host*.conf\n")
    (work / "d" / "excludefiles").write_text("-/usr/share/doc/*\n-/usr/share/man/*\n")
    supermin_nobody(
        ["--build", "-f", "filesystem", "--repo", str(pool), "-o", str(work / "c"), str(work / "d")]
    )
    assert (work / "c/usr/bin/hello").is_file()
    assert (work / "c/etc/host.conf").read_bytes() == Path("/etc/host.conf").read_bytes()
    assert (work / "c/usr/share/doc").is_dir()
    assert not list((work / "c/usr/share/doc").iterdir())
    assert not (work / "c/usr/share/man/man1/hello.1.gz").exists()


def test_host_mode_builds_from_installed_packages() -> None:
    work = scratch_dir("host")
    supermin_here(["prepare", "bash", "-o", str(work / "d")])
    assert (work / "d/packages").read_text() == "bash\n"
    supermin_here(["build", str(work / "d"), "-f", "chroot", "-o", str(work / "c")])
    subprocess.run(["chroot", str(work / "c"), "/bin/bash", "-c", "true"], check=True)


def test_host_mode_as_nobody_reports_unreadable_files_once() -> None:
    work = scratch_dir("host-nobody")
    supermin_nobody(["prepare", "bash", "coreutils", "-o", str(work / "d")])
    result = supermin_nobody(["build", str(work / "d"), "-f", "chroot", "-o", str(work / "c")])
    assert (work / "c/bin/ls").exists() or (work / "c/usr/bin/ls").exists()
    assert result.stderr.count("could not be read") <= 1


def test_synthetic_package_with_scripts_and_provides(tmp_path: Path) -> None:
    work = scratch_dir("synthetic")
    pool = work / "pool"
    build_deb(
        pool,
        "tp-base",
        "1.0",
        files={"/usr/share/tp/base": b"base\n"},
        scripts={"preinst": "#!/bin/sh -e\necho pre\n", "postinst": "#!/bin/sh\necho post\n"},
    )
    build_deb(
        pool,
        "tp-impl",
        "2.0",
        provides="tp-virtual (= 2.0)",
        depends="tp-base",
        scripts={"postinst": "#!/bin/bash\necho impl\n"},
    )
    build_deb(
        pool,
        "tp-app",
        "1.0",
        depends="tp-virtual (>= 2)",
        scripts={"postinst": "#!/bin/sh\necho app\n"},
    )
    prepare_in(work, ["tp-app"], pool)
    supermin_nobody(
        ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot", "-o", str(work / "c")]
    )
    lines = [
        line.split("\t")
        for line in (work / "c/usr/lib/supermin/firstboot/manifest").read_text().splitlines()[1:]
    ]
    steps = [(fields[1], fields[3], fields[4], fields[5]) for fields in lines]
    assert steps == [
        ("tp-base", "preinst", "/bin/sh -e", "install"),
        ("tp-base", "postinst", "/bin/sh", "configure ''"),
        ("tp-impl", "postinst", "/bin/bash", "configure ''"),
        ("tp-app", "postinst", "/bin/sh", "configure ''"),
    ]
    assert not (work / "c/var/lib/tp").exists(), "no script may run at build time"


_IMPORTED_WRITERS_SCRIPT = """
import sys
from supermin.cli import main
status = main(sys.argv[1:])
writers = ("supermin.outputs.ext2", "supermin.miniinitrd", "supermin.earlymodules")
print(status, " ".join(name for name in writers if name in sys.modules) or "none")
"""


def test_a_chroot_build_does_not_import_the_image_writers(tmp_path: Path) -> None:
    """The ext2 image writer and the mini-initrd's cost ~30 ms to import: only the
    formats that write them pay it (a --size word is parsed by the image writer's module)."""
    pool = real_pool(["hello"])
    work = scratch_dir("imports")
    prepare_in(work, ["hello"], pool)

    def imported(*extra: str) -> str:
        build = ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot", "-o"]
        return subprocess.run(
            [sys.executable, "-c", _IMPORTED_WRITERS_SCRIPT, *build, str(tmp_path / "c"), *extra],
            cwd=tmp_path,  # not the checkout: its supermin/ would shadow the installed package
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    assert imported() == "0 none"
    assert (tmp_path / "c/usr/bin/hello").is_file()
    assert imported("--size", "1G") == "0 supermin.outputs.ext2"
