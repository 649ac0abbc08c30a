"""Run the installed `supermin` command the way users do, and read what it built."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from support.debdata import cache_root
from support.privileges import make_world_dir, run_unprivileged

SUPERMIN = str(Path(sys.executable).parent / "supermin")


_SCRATCH_DIRS: list[Path] = []


def scratch_dir(label: str) -> Path:
    """A fresh directory uid 65534 can write into (pytest's tmp dirs are 0700 root).

    Removed when the test session ends (tests/conftest.py), since appliances are large.
    """
    path = make_world_dir(cache_root() / "runs" / f"{label}-{uuid.uuid4().hex[:8]}")
    _SCRATCH_DIRS.append(path)
    return path


def remove_scratch_dirs() -> None:
    """Remove this session's scratch directories, whatever modes the product gave them."""
    for path in _SCRATCH_DIRS:
        subprocess.run(["chmod", "-R", "u+rwX", str(path)], check=False, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
    _SCRATCH_DIRS.clear()


def nobody_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERMIN_")}
    env["HOME"] = "/nonexistent"
    env["SUPERMIN_CACHE_DIR"] = str(make_world_dir(cache_root() / "nobody-cache"))
    env.update(extra or {})
    return env


def supermin_nobody(
    args: Sequence[str], *, check: bool = True, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """supermin as uid 65534 with no network (as root in CI: unshare -n + setpriv)."""
    return run_unprivileged([SUPERMIN, *args], env=nobody_env(env), check=check)


def supermin_here(
    args: Sequence[str], *, check: bool = True, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """supermin as the test's own user (root in CI), for host-mode runs."""
    proc = subprocess.run(
        [SUPERMIN, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"supermin {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(path: Path) -> tuple[str, int, int, str, str]:
    """(type, mode, size, sha256, link target) of one path, as a tree comparison needs."""
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return ("symlink", 0, 0, "", os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir", mode, 0, "", "")
    if stat.S_ISREG(st.st_mode):
        return ("file", mode, st.st_size, sha256(path), "")
    return (stat.filemode(st.st_mode)[0], mode, 0, "", "")


def listing(root: Path) -> dict[str, tuple[str, int, int, str, str]]:
    """Every path under `root` (as an absolute image path) with its description."""
    result = {}
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            full = Path(top) / name
            result["/" + str(full.relative_to(root))] = describe(full)
    return result


def prepare_in(
    work: Path, roots: Sequence[str], repo: Path, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`supermin prepare ROOTS --repo REPO -o WORK/d` as uid 65534, offline."""
    return supermin_nobody(
        ["prepare", *roots, "--repo", str(repo), "-o", str(work / "d")], check=check
    )


def build_in(
    work: Path,
    repo: Path,
    *,
    fmt: str = "chroot",
    check: bool = True,
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """`supermin build WORK/d --repo REPO -f FMT -o WORK/c` as uid 65534, offline."""
    return supermin_nobody(
        ["build", str(work / "d"), "--repo", str(repo), "-f", fmt, "-o", str(work / "c"), *extra],
        check=check,
    )
