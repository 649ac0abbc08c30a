"""supermin 5 options: --if-newer that notices what matters, --lock, --list-drivers, -V."""

from __future__ import annotations

import fcntl
import subprocess
import time
from pathlib import Path

from support.debdata import build_update_debs
from support.privileges import unprivileged_offline
from support.product import SUPERMIN, nobody_env, scratch_dir, supermin_here, supermin_nobody

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
