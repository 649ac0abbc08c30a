"""One entry stream, four writers: every output holds exactly what the root-built chroot holds.

Images are produced as uid 65534 without network; reading them back (extracting
the cpio and tar as root, mounting the ext2 image read-only) is the judge.
"""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import pytest
from support.debdata import kernel_files, kernel_modules, real_pool, synthetic_debs
from support.product import scratch_dir, supermin_here, supermin_nobody
from support.rpmdata import synthetic_rpms
from support.trees import Record, extract_as_root, mount_ext2, tree_listing, umount

APPLIANCES = {
    "bash-coreutils": (["bash", "coreutils"], lambda: real_pool(["bash", "coreutils", "hello"])),
    "synthetic-debs": (
        ["tp-rich", "tp-perms", "tp-files", "tp-triggers", "tp-libgreet-dev", "tp-mover"],
        synthetic_debs,
    ),
    "synthetic-rpms": (
        ["tp-rich", "tp-perms", "tp-files", "tp-scripts", "tp-mover"],
        lambda: synthetic_rpms() / "repo",
    ),
}
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


@pytest.fixture(scope="module", params=sorted(APPLIANCES))
def appliance(request: pytest.FixtureRequest) -> tuple[Path, Path]:
    roots, source = APPLIANCES[request.param]
    repo = source()
    work = scratch_dir(f"golden-{request.param}")
    supermin_nobody(["prepare", *roots, "--repo", str(repo), "-o", str(work / "d")])
    return work, repo


def _build(work: Path, repo: Path, fmt: str, out: str, *extra: str) -> Path:
    env = dict(EPOCH)
    if fmt == "ext2":  # DIR/kernel and DIR/initrd beside DIR/root: a kernel is needed
        env["SUPERMIN_KERNEL"] = str(kernel_files() / "vmlinuz")
        env["SUPERMIN_MODULES"] = str(kernel_modules())
    supermin_nobody(
        ["build", str(work / "d"), "--repo", str(repo), "-f", fmt, "-o", str(work / out), *extra],
        env=env,
    )
    return work / out


@pytest.fixture(scope="module")
def reference(appliance: tuple[Path, Path]) -> dict[str, Record]:
    """The chroot built as root: exact owners, modes and device nodes."""
    work, repo = appliance
    supermin_here(
        [
            "build",
            str(work / "d"),
            "--repo",
            str(repo),
            "-f",
            "chroot",
            "-o",
            str(work / "root-chroot"),
        ],
        env=EPOCH,
    )
    return tree_listing(work / "root-chroot")


def _without_early_devices(listing: dict[str, Record], reference: dict[str, Record]) -> dict:
    # The bootable formats (initrd, ext2) always add /dev/console and /dev/null (and /dev)
    # for an early console, and /init with the directories it mounts on, each only where
    # the appliance has none.
    boot = {"/dev", "/dev/console", "/dev/null", "/init", "/proc", "/sys", "/run", "/tmp"}
    extra = boot - set(reference)
    return {path: record for path, record in listing.items() if path not in extra}


@pytest.mark.parametrize("compress", ["zstd", "xz", "gzip", "none"])
def test_initrd_cpio_equals_root_chroot(
    appliance: tuple[Path, Path], reference: dict[str, Record], compress: str, tmp_path: Path
) -> None:
    work, repo = appliance
    initrd = _build(work, repo, "initrd", f"initrd-{compress}.img", "--compress", compress)
    listing = extract_as_root(initrd, tmp_path / "x")
    assert listing["/dev/console"][0] == "char" and listing["/dev/console"][7] == (5, 1)
    assert listing["/dev/null"][7] == (1, 3)
    assert listing["/init"][0] == "file" and listing["/init"][1] == 0o755
    assert _without_early_devices(listing, reference) == reference


def test_initrd_lists_with_gnu_cpio(appliance: tuple[Path, Path]) -> None:
    work, repo = appliance
    initrd = _build(work, repo, "initrd", "initrd-plain.img", "--compress", "none")
    names = subprocess.run(
        ["cpio", "-it", "--quiet"],
        stdin=initrd.open("rb"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert "usr" in names and "dev/console" in names


@pytest.mark.parametrize("name", ["rootfs.tar", "rootfs.tar.gz", "rootfs.tar.xz", "rootfs.tar.zst"])
def test_tar_equals_root_chroot(
    appliance: tuple[Path, Path], reference: dict[str, Record], name: str, tmp_path: Path
) -> None:
    work, repo = appliance
    tarball = _build(work, repo, "tar", name)
    assert extract_as_root(tarball, tmp_path / "x", tool="tar") == reference


def test_ext2_mounted_equals_root_chroot(
    appliance: tuple[Path, Path], reference: dict[str, Record], tmp_path: Path
) -> None:
    work, repo = appliance
    image = _build(work, repo, "ext2", "ext2", "--size", "1G") / "root"
    subprocess.run(["e2fsck", "-fn", str(image)], check=True, capture_output=True)
    mountpoint = tmp_path / "mnt"
    mount_ext2(image, mountpoint)
    try:
        listing = tree_listing(mountpoint)
    finally:
        umount(mountpoint)
    listing.pop("/lost+found", None)
    assert listing["/init"][0] == "file" and listing["/init"][1] == 0o755
    # The root also gets the kernel's modules (supermin 5 does it too), found by
    # libguestfs's init and udev; the chroot has no kernel, so they are compared apart.
    modules = {p for p in listing if p == "/lib/modules" or p.startswith("/lib/modules/")}
    assert len(modules) == sum(1 for _ in kernel_modules().rglob("*")) + 2  # + the two dirs
    if "/lib" not in reference:  # made only to hold them
        modules.add("/lib")
    listing = {p: r for p, r in listing.items() if p not in modules}
    assert _without_early_devices(listing, reference) == reference


@pytest.mark.parametrize(
    ("fmt", "out", "produced"),
    [
        ("initrd", "again.img", ""),
        ("tar", "again.tar.zst", ""),
        ("ext2", "again-ext2", "root"),
        ("ext2", "again-ext2-initrd", "initrd"),
    ],
)
def test_source_date_epoch_builds_are_byte_identical(
    appliance: tuple[Path, Path], fmt: str, out: str, produced: str
) -> None:
    work, repo = appliance
    # 1G: the ext2 root also holds the kernel's modules (~400 MB), as supermin 5's does.
    first = _build(work, repo, fmt, "1-" + out, "--size", "1G") / produced
    second = _build(work, repo, fmt, "2-" + out, "--size", "1G") / produced
    assert filecmp.cmp(first, second, shallow=False)
