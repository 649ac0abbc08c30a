"""supermin 5's options, as supermin 5 accepts or refuses them, and their effects.

--if-newer that notices what matters, --lock, --list-drivers, -V, --include-packagelist,
the refused --names and --dtb, $TMPDIR, exit statuses, --help, quiet output.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.debdata import build_deb, build_update_debs, host_arch, kernel_files, kernel_modules
from support.privileges import run_unprivileged, unprivileged_offline
from support.product import SUPERMIN, nobody_env, scratch_dir, supermin_here, supermin_nobody
from support.rpmdata import solv_closure, synthetic_rpms

from supermin import __version__


def _build(work: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    result = supermin_nobody(
        [
            "build",
            "-v",
            "--if-newer",
            str(work / "d"),
            "--repo",
            str(work / "pool"),
            "-f",
            "chroot",
            "-o",
            str(work / "c"),
            *extra,
        ],
        env=env,
    )
    return result.stderr


def test_if_newer_skips_only_when_nothing_changed() -> None:
    work = scratch_dir("if-newer")
    build_update_debs(work / "pool", "1.0")
    supermin_nobody(["prepare", "tp-update", "--repo", str(work / "pool"), "-o", str(work / "d")])
    assert "up to date" not in _build(work)
    start = time.perf_counter()
    assert "up to date" in _build(work)
    print(f"no-op --if-newer run: {time.perf_counter() - start:.2f} s, incl. interpreter start")
    (work / "pool" / "tp-update_1.0_all.deb").unlink()
    build_update_debs(work / "pool", "1.1")
    assert "up to date" not in _build(work)
    assert (work / "c/usr/lib/tp-update/data.txt").read_text() == "data 1.1\n"
    assert "up to date" in _build(work)
    (work / "d" / "packages").write_text("tp-update\n\n")
    assert "up to date" not in _build(work)
    assert "up to date" not in _build(work, env={"SUPERMIN_KERNEL": "/nonexistent"})
    subprocess.run(["rm", "-rf", str(work / "c")], check=True)
    assert "up to date" not in _build(work)
    assert (work / "c/usr/lib/tp-update/data.txt").is_file()


def test_lock_is_held_for_the_whole_run() -> None:
    work = scratch_dir("lock")
    build_update_debs(work / "pool", "1.0")
    lock = work / "lock"
    lock.touch(mode=0o666)
    lock.chmod(0o666)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = subprocess.Popen(
            unprivileged_offline(
                [
                    SUPERMIN,
                    "prepare",
                    "tp-update",
                    "--lock",
                    str(lock),
                    "--repo",
                    str(work / "pool"),
                    "-o",
                    str(work / "d"),
                ]
            ),
            env=nobody_env(),
            cwd="/",
        )
        time.sleep(2)
        assert waiting.poll() is None, "supermin ran without the lock"
        assert not (work / "d").exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    assert waiting.wait(timeout=120) == 0
    assert (work / "d/packages").read_text() == "tp-update\n"


def test_list_drivers_and_version() -> None:
    drivers = supermin_here(["--list-drivers"]).stdout.splitlines()
    assert "deb: detected" in drivers
    assert any(line.startswith("rpm: ") for line in drivers)
    assert supermin_here(["-V"]).stdout.strip() == f"supermin {__version__}"


def _packagelist_pool(pool: Path) -> None:
    """A closure of three (one with an epoch, one of two versions) and a package outside it."""
    build_deb(
        pool,
        "tp-pl-top",
        "2:1.0-1",
        arch=host_arch(),
        depends="tp-pl-lib (>= 1.5), tp-pl-lib2",
        files={"/usr/share/tp-pl/top": b"top\n"},
    )
    for version in ("1.4", "1.5"):
        build_deb(pool, "tp-pl-lib", version, files={"/usr/share/tp-pl/lib": b"lib\n"})
    build_deb(pool, "tp-pl-lib2", "0.1", files={"/usr/share/tp-pl/lib2": b"lib2\n"})
    build_deb(pool, "tp-pl-unrelated", "1.0", files={"/usr/share/tp-pl/other": b"other\n"})


def _build_packagelist(work: Path, fmt: str, out: str, *extra: str) -> str:
    env = {}
    if fmt == "ext2":  # DIR/kernel beside DIR/root: a kernel is needed
        env = {
            "SUPERMIN_KERNEL": str(kernel_files() / "vmlinuz"),
            "SUPERMIN_MODULES": str(kernel_modules()),
        }
    args = ["build", str(work / "d"), "--repo", str(work / "pool"), "-f", fmt, "-o"]
    return supermin_nobody([*args, str(work / out), *extra], env=env).stderr


def _read_member(archive: Path, member: str) -> str:
    return subprocess.run(
        ["bsdtar", "-xOf", str(archive), member], capture_output=True, text=True, check=True
    ).stdout


def test_include_packagelist_in_every_format_as_dpkg_names_them() -> None:
    work = scratch_dir("packagelist")
    _packagelist_pool(work / "pool")
    supermin_nobody(["prepare", "tp-pl-top", "--repo", str(work / "pool"), "-o", str(work / "d")])
    # supermin 5's format for dpkg: name_version_arch, the epoch kept, sorted bytewise
    # ("lib2" before "lib_"), one per line, only the closure.
    expected = f"tp-pl-lib2_0.1_all\ntp-pl-lib_1.5_all\ntp-pl-top_2:1.0-1_{host_arch()}\n"
    flag = "--include-packagelist"
    _build_packagelist(work, "chroot", "c", flag)
    assert (work / "c/packagelist").read_text() == expected
    assert (work / "c/packagelist").stat().st_mode & 0o777 == 0o644
    _build_packagelist(work, "tar", "c.tar", flag)
    assert _read_member(work / "c.tar", "./packagelist") == expected
    _build_packagelist(work, "initrd", "c.img", flag, "--compress", "none")
    assert _read_member(work / "c.img", "packagelist") == expected
    _build_packagelist(work, "ext2", "e", flag)
    debugfs = subprocess.run(
        ["debugfs", "-R", "cat /packagelist", str(work / "e/root")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert debugfs.stdout == expected
    # Not asked for, not there; and asking for it is part of what --if-newer compares.
    assert "up to date" not in _build_packagelist(work, "chroot", "n", "-v", "--if-newer")
    assert not (work / "n/packagelist").exists()
    assert "up to date" in _build_packagelist(work, "chroot", "n", "-v", "--if-newer")
    assert "up to date" not in _build_packagelist(work, "chroot", "n", "-v", "--if-newer", flag)
    assert (work / "n/packagelist").read_text() == expected


def test_include_packagelist_names_rpms_by_nevra() -> None:
    repo = synthetic_rpms() / "repo"
    work = scratch_dir("packagelist-rpm")
    # tp-greet 2:1.0 (epoch 2) beats 1:3.0; the rest have no epoch, which NEVRA leaves out.
    supermin_nobody(["prepare", "tp-greet", "--repo", str(repo), "-o", str(work / "d")])
    args = ["build", str(work / "d"), "--repo", str(repo), "-f", "chroot", "-o", str(work / "c")]
    supermin_nobody([*args, "--include-packagelist"])
    listed = (work / "c/packagelist").read_text().splitlines()
    assert listed == solv_closure(repo, ["tp-greet"], weak=False)  # libsolv prints NEVRAs
    assert "tp-greet-2:1.0-1.x86_64" in listed


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        # supermin 5 refuses these at once, before the other options are looked at.
        (["--names"], 1, "supermin 4"),
        (["--names", "--build", "-f", "chroot"], 1, "supermin 4"),
        (["--dtb", "*.dtb"], 1, "--dtb was removed"),
        # Both supermin 5 (OCaml's Arg) and argparse exit 2 for a malformed command line.
        (["--dtb"], 2, "--dtb"),
        (["--no-such-option"], 2, "--no-such-option"),
        (["--build", "-o"], 2, "-o"),
        # A well-formed command line that cannot be run: 1, in supermin 5's order of checks.
        ([], 1, "--prepare or --build"),
        (["--build", "-o", "/nonexistent/x", "/nonexistent/d"], 1, "-f FORMAT"),
        (["--build", "-f", "chroot", "/nonexistent/d"], 1, "-o OUTPUT"),
        (["--build", "-f", "chroot", "-o", "/nonexistent/x"], 1, "input directory"),
        (["--prepare", "bash"], 1, "-o OUTPUT"),
        (["--prepare", "-o", "/nonexistent/x"], 1, "package name"),
        (["--build", "-f", "bogus", "-o", "/nonexistent/x", "/nonexistent/d"], 1, "bogus"),
        # A build that fails: 1.
        (["--build", "-f", "chroot", "-o", "/nonexistent/x", "/nonexistent/d"], 1, "/nonexistent"),
    ],
)
def test_exit_status_and_message_as_supermin_5(args: list[str], status: int, says: str) -> None:
    result = supermin_nobody(args, check=False)
    assert result.returncode == status, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    if status == 1:  # one line, supermin's prefix
        assert result.stderr.startswith("supermin: error: ")
        assert result.stderr.count("\n") == 1


def test_tmpdir_must_be_absolute() -> None:
    for tmpdir in ("relative/tmp", ""):
        result = supermin_nobody(["-V"], env={"TMPDIR": tmpdir}, check=False)
        assert result.returncode == 1
        assert result.stdout == ""
        assert "$TMPDIR must be an absolute path" in result.stderr
    result = supermin_nobody(["-V"], env={"TMPDIR": "/tmp"})
    assert result.stdout.strip() == f"supermin {__version__}"


# Every option supermin 5.2.2's --help lists.
SUPERMIN_5_OPTIONS = [
    "--build",
    "--copy-kernel",
    "--dtb",
    "-f",
    "--format",
    "--host-cpu",
    "--if-newer",
    "--include-packagelist",
    "--list-drivers",
    "--lock",
    "--names",
    "-o",
    "--packager-config",
    "--prepare",
    "--size",
    "--use-installed",
    "-v",
    "--verbose",
    "-V",
    "--version",
    "--help",
]


def test_help_lists_every_supermin_5_option() -> None:
    text = supermin_here(["--help"]).stdout
    words = set(text.replace(",", " ").replace("[", " ").replace("]", " ").split())
    missing = [option for option in SUPERMIN_5_OPTIONS if option not in words]
    assert not missing, text
    assert supermin_here(["-help"]).stdout == text  # supermin 5 takes the one-dash spelling


def test_quiet_by_default_and_verbose_levels() -> None:
    work = scratch_dir("quiet")
    build_update_debs(work / "pool", "1.0")
    prepare = ["prepare", "tp-update", "--repo", str(work / "pool"), "-o", str(work / "d")]
    result = supermin_nobody(prepare)
    assert (result.stdout, result.stderr) == ("", "")
    build = ["build", str(work / "d"), "--repo", str(work / "pool"), "-f", "chroot"]
    for fmt, out in (("chroot", "c"), ("tar", "c.tar")):
        result = supermin_nobody([*build[:-1], fmt, "-o", str(work / out)])
        assert (result.stdout, result.stderr) == ("", ""), fmt
    once = supermin_nobody([*build, "-o", str(work / "v"), "-v"])
    twice = supermin_nobody([*build, "-o", str(work / "v"), "-vv"])
    for result in (once, twice):
        lines = result.stderr.splitlines()
        assert lines[0] == f"supermin: version: {__version__}"
        assert all(line.startswith("supermin: ") for line in lines)
        assert result.stdout == ""
    # -vv: everything -v says (timings aside) and more detail.
    said = {line for line in once.stderr.splitlines() if "done in" not in line}
    detail = [line for line in twice.stderr.splitlines() if "done in" not in line]
    assert said < set(detail), (once.stderr, twice.stderr)


HEAVY_MODULES = ("networkx", "libarchive", "debian", "zstandard", "supermin.build")


def test_if_newer_no_op_skips_the_heavy_imports() -> None:
    """A fresh --if-newer run (libguestfs does one per launch) needs no resolver or writer."""
    work = scratch_dir("no-op")
    build_update_debs(work / "pool", "1.0")
    supermin_nobody(["prepare", "tp-update", "--repo", str(work / "pool"), "-o", str(work / "d")])
    argv = ["build", "--if-newer", str(work / "d"), "--repo", str(work / "pool")]
    argv += ["-f", "chroot", "-o", str(work / "c")]
    supermin_nobody(argv)
    probe = (
        "import sys\n"
        "from supermin.cli import main\n"
        f"status = main({[*argv, '-v']!r})\n"
        f"print(status, sorted(m for m in sys.modules if m.startswith({HEAVY_MODULES!r})))\n"
    )
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        result = run_unprivileged([sys.executable, "-c", probe], env=nobody_env(), cwd="/")
        timings.append(time.perf_counter() - start)
    assert "up to date" in result.stderr
    assert result.stdout.strip() == "0 []"
    print(f"no-op --if-newer: median {sorted(timings)[2]:.3f} s wall, incl. interpreter start")
