"""libguestfs, the model client, builds and boots its appliance with our supermin.

Debian's libguestfs-tools ships a real supermin appliance (packages, hostfiles,
excludefiles and four tarballs, among them libguestfs's own /init). We build it
the way libguestfs does, then let libguestfs itself be the judge: its
libguestfs-test-tool boots the result under qemu (TCG: the nested KVM here
hangs) and talks to its daemon over virtio-serial. Needs libguestfs-tools,
linux-image-amd64 and qemu-system-x86, which ./scripts/test installs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support.product import SUPERMIN, scratch_dir, supermin_nobody

from supermin import __version__

SUPERMIN_D = Path("/usr/lib/x86_64-linux-gnu/guestfs/supermin.d")
FINISHED = "===== TEST FINISHED OK ====="
LAUNCH_TIMEOUT = 300


def _libguestfs_env(cache: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIBGUESTFS_", "SUPERMIN_"))}
    env.update(
        LIBGUESTFS_BACKEND="direct",
        LIBGUESTFS_BACKEND_SETTINGS="force_tcg",
        LIBGUESTFS_CACHEDIR=str(cache),
        TMPDIR=str(cache),
    )
    env.update(extra or {})
    return env


def _run(
    command: Sequence[str], env: Mapping[str, str], timeout: int = LAUNCH_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["timeout", str(timeout), *command],
        capture_output=True,
        text=True,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _test_tool(env: Mapping[str, str]) -> str:
    """libguestfs-test-tool's whole log; asserts it finished OK."""
    proc = _run(["libguestfs-test-tool"], env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and FINISHED in log, log[-8000:]
    return log


def _build_fixed(work: Path) -> Path:
    """The ext2 appliance of Debian's supermin.d, built as uid 65534 without network."""
    fixed = work / "fixed"
    proc = supermin_nobody(["--build", "--format", "ext2", str(SUPERMIN_D), "-o", str(fixed)])
    # Quiet by default, as supermin 5: at most the one line counting unreadable host files.
    lines = proc.stderr.splitlines()
    assert len(lines) <= 1 and all("host files could not be read" in x for x in lines), lines
    assert proc.stdout == ""
    return fixed


def test_fixed_appliance_boots_libguestfs_and_guestfish_makes_a_filesystem() -> None:
    work = scratch_dir("libguestfs-fixed")
    fixed = _build_fixed(work)
    assert {p.name for p in fixed.iterdir()} == {"kernel", "initrd", "root"}
    assert fixed.joinpath("kernel").is_symlink()  # supermin 5's layout without --copy-kernel
    # Clean before booting: the host's modules and the packages' large files were
    # copied in early, the copies the tree did not take freed again.
    subprocess.run(["e2fsck", "-fn", str(fixed / "root")], check=True, capture_output=True)
    (fixed / "README.fixed").write_text("built by supermin (python) for libguestfs-test-tool\n")
    cache = work / "cache"
    cache.mkdir()
    env = _libguestfs_env(cache, {"LIBGUESTFS_PATH": str(fixed)})
    log = _test_tool(env)
    assert "supermin: " not in log  # a fixed appliance: libguestfs never ran a supermin

    # A guestfish session on a scratch disk: partition, ext4, write, read back.
    disk = work / "disk.img"
    script = "\n".join(
        [
            "run",
            "part-disk /dev/sda mbr",
            "mkfs ext4 /dev/sda1",
            "mount /dev/sda1 /",
            'write /hello "written by the supermin appliance"',
            "umount-all",
            "mount-ro /dev/sda1 /",
            "cat /hello",
            "vfs-type /dev/sda1",
        ]
    )
    with disk.open("wb") as handle:
        handle.truncate(64 << 20)
    proc = subprocess.run(
        ["timeout", str(LAUNCH_TIMEOUT), "guestfish", "--rw", "-a", str(disk)],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines() == ["written by the supermin appliance", "ext4"], proc.stdout
    # The host agrees: the partition table and filesystem are really on the disk.
    parted = subprocess.run(["sfdisk", "-d", str(disk)], capture_output=True, text=True)
    assert "type=83" in parted.stdout, parted.stdout


def _shadowed(command: Sequence[str]) -> list[str]:
    """`command` in a private mount namespace where /usr/bin/supermin is our supermin.

    libguestfs runs the absolute /usr/bin/supermin it was configured with; a bind
    mount shadows Debian's there for this process tree only.
    """
    mount = f'mount --bind {SUPERMIN} /usr/bin/supermin && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh", *command]


def test_libguestfs_builds_its_appliance_through_us_and_reuses_it() -> None:
    work = scratch_dir("libguestfs-calls-us")
    cache = work / "cache"
    cache.mkdir()
    env = _libguestfs_env(cache)
    first = _test_tool_shadowed(env)
    assert f"supermin: version: {__version__}" in first, first[:6000]
    assert "supermin: built " in first
    appliance = next(cache.glob(".guestfs-*/appliance.d"))
    assert {p.name for p in appliance.iterdir()} == {"kernel", "initrd", "root"}
    assert not appliance.joinpath("kernel").is_symlink()  # libguestfs passes --copy-kernel
    before = {name: appliance.joinpath(name).stat().st_ino for name in ("root", "initrd")}

    second = _test_tool_shadowed(env)
    assert "is up to date" in second and "supermin: built " not in second, second[:6000]
    # The same files (a rebuild renames new ones in); libguestfs itself may touch the root.
    assert {name: appliance.joinpath(name).stat().st_ino for name in before} == before


def _test_tool_shadowed(env: Mapping[str, str]) -> str:
    proc = _run(_shadowed(["libguestfs-test-tool"]), env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and FINISHED in log, log[-8000:]
    return log


def test_libguestfs_command_line_twice_at_once_serializes_on_the_lock() -> None:
    """The exact command libguestfs runs, started twice together: one builds, one waits."""
    work = scratch_dir("libguestfs-lock")
    command = [
        "--build",
        "--verbose",
        "--if-newer",
        "--lock",
        str(work / "lock"),
        "--copy-kernel",
        "-f",
        "ext2",
        "--host-cpu",
        "x86_64",
        str(SUPERMIN_D),
        "-o",
        str(work / "appliance.d"),
    ]
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: supermin_nobody(command, check=False), range(2)))
    assert [run.returncode for run in runs] == [0, 0], [run.stderr[-2000:] for run in runs]
    built = [run for run in runs if "supermin: built " in run.stderr]
    waited = [run for run in runs if "is up to date" in run.stderr]
    assert len(built) == 1 and len(waited) == 1, [run.stderr[-1000:] for run in runs]
    appliance = work / "appliance.d"
    assert {p.name for p in appliance.iterdir()} == {"kernel", "initrd", "root"}
    assert appliance.joinpath("kernel").is_file() and not appliance.joinpath("kernel").is_symlink()
    # Nothing half-built is left beside it.
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == [
        ".appliance.d.supermin-stamp"
    ]
