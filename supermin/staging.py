"""Build beside the target, then rename into place: a failed build changes nothing."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from supermin.errors import OutputError


def remove_tree(path: Path) -> None:
    """rmtree that also copes with read-only directories (an unprivileged build makes them)."""

    def make_writable(_func: object, failed: str, _exc: object) -> None:
        parent = os.path.dirname(failed)
        os.chmod(parent, stat.S_IRWXU)
        if os.path.isdir(failed) and not os.path.islink(failed):
            os.chmod(failed, stat.S_IRWXU)
            shutil.rmtree(failed, onerror=make_writable)
        else:
            os.unlink(failed)

    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, onerror=make_writable)


class Stage:
    """A scratch directory beside the target: `work` for spools, `path()` for new outputs."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.work = scratch / "work"
        self.work.mkdir()
        self._outputs: list[tuple[Path, Path]] = []

    def path(self, target: Path) -> Path:
        staged = self.scratch / f"new-{len(self._outputs)}"
        self._outputs.append((staged, target))
        return staged

    def commit(self) -> None:
        for number, (staged, target) in enumerate(self._outputs):
            old = self.scratch / f"old-{number}"
            if target.exists() or target.is_symlink():
                os.rename(target, old)
            try:
                os.rename(staged, target)
            except OSError as err:
                if old.exists() or old.is_symlink():
                    os.rename(old, target)  # put the previous output back
                raise OutputError(
                    f"cannot move the new output into {target}: {err.strerror}"
                ) from None


@contextmanager
def staged(target: Path) -> Iterator[Stage]:
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as err:
        raise OutputError(
            f"cannot write output {target}: {err.strerror}",
            "choose an -o path in a writable directory",
        ) from None
    try:
        stage = Stage(scratch)
        yield stage
        stage.commit()
    finally:
        remove_tree(scratch)
