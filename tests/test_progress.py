"""The progress bar: drawn on a terminal, never under CI, with -v or into a pipe."""

from __future__ import annotations

import io
import os
import pty
import subprocess
from pathlib import Path

from support.debdata import real_pool
from support.product import SUPERMIN, scratch_dir

from supermin.report import Progress, Reporter

ROOTS = ["bash", "coreutils"]


def _build_on_a_terminal(work: Path, env: dict[str, str], *extra: str) -> str:
    """Run a build with stderr on a pseudo-terminal; what the terminal received."""
    repos = ["--repo", str(real_pool(ROOTS))]
    subprocess.run([SUPERMIN, "prepare", *ROOTS, *repos, "-o", str(work / "d")], check=True)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [SUPERMIN, "build", str(work / "d"), *repos, "-f", "tar", *extra]
            + ["-o", str(work / "out.tar")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=follower,
            env=env,
            check=False,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(extra)
    return env


def test_a_terminal_gets_a_bar_that_is_erased() -> None:
    text = _build_on_a_terminal(scratch_dir("progress-tty"), _env())
    assert "supermin: reading [" in text and "packages" in text and " MB" in text, text
    assert text.endswith("\r\x1b[K"), repr(text[-200:])  # erased: the terminal is left clean


def test_ci_and_verbose_get_no_bar() -> None:
    assert "reading [" not in _build_on_a_terminal(scratch_dir("progress-ci"), _env(CI="true"))
    verbose = _build_on_a_terminal(scratch_dir("progress-v"), _env(), "-v")
    assert "reading [" not in verbose and "supermin: reading " in verbose, verbose


def test_bar_counts_items_and_bytes() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    report = Reporter(stream=Terminal())
    old = os.environ.pop("CI", None)
    try:
        progress = Progress(report, "reading", items=2, size=3_000_000)
    finally:
        if old is not None:
            os.environ["CI"] = old
    progress.advance(1_000_000)
    progress.advance(2_000_000)
    assert progress.line(10) == ("supermin: reading [##########] 2/2 packages, 3.0/3.0 MB")
    assert "2/2 packages" in report.stream.getvalue()  # type: ignore[attr-defined]
