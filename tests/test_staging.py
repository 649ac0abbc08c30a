"""The stage beside an output: where its new directories are placed, and what they are called."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.privileges import run_unprivileged
from support.product import scratch_dir

from supermin.staging import Stage, staged


def _fs_type(path: Path) -> str:
    return subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def _attributes(path: Path) -> str:
    """lsattr's letters for the directory itself (e2fsprogs is the judge here)."""
    out = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def _is_ext(path: Path) -> bool:
    # stat(1) names ext2, ext3 and ext4 alike "ext2/ext3": one magic number.
    return _fs_type(path).startswith("ext")


def test_scratch_places_its_directories_as_top_level_ones(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    stage = Stage(scratch)
    assert stage.work.is_dir()
    if _is_ext(scratch):  # the flag is ext2/3/4's: elsewhere the stage works without it
        assert "T" in _attributes(scratch)


def test_an_unprivileged_build_marks_its_stage_too() -> None:
    # chattr +T needs no privilege on a directory of one's own: prove it as 65534.
    parent = scratch_dir("staging")
    scratch = parent / "scratch"
    code = (
        "import sys; from pathlib import Path; from supermin.staging import Stage; "
        "p = Path(sys.argv[1]); p.mkdir(); Stage(p)"
    )
    run_unprivileged([sys.executable, "-c", code, str(scratch)])
    assert scratch.stat().st_uid == (65534 if os.geteuid() == 0 else os.geteuid())
    if _is_ext(scratch):
        assert "T" in _attributes(scratch)


def test_new_outputs_get_names_of_their_own_and_leave_the_flag_behind(tmp_path: Path) -> None:
    target = tmp_path / "appliance"
    names = []
    for _ in range(2):
        with staged(target) as stage:
            made = stage.path(target)
            made.mkdir()
            (made / "usr").mkdir()
            names.append((made.name, stage.work.name))
    # Two builds of the same output: different directory names, so ext4 hashes
    # them to different starting groups (see staging.mark_top_directory).
    assert names[0][0] != names[1][0] and names[0][1] != names[1][1]
    assert all(new.startswith("new-0-") and work.startswith("work-") for new, work in names)
    assert (target / "usr").is_dir()
    if _is_ext(target):
        assert "T" not in _attributes(target)
        assert "T" not in _attributes(target / "usr")
    assert [p.name for p in tmp_path.iterdir()] == ["appliance"]  # the stage is gone
