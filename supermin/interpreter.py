"""Helper processes: a fresh interpreter running a function of this very package.

Fresh, not forked: copy-on-write faults on a large heap cost more than an
interpreter's start. The package's own directory goes first on the helper's
path, so it runs the same code as the process that started it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

_PACKAGE_ROOT = Path(__file__).parent.parent  # the directory holding supermin/


def start_function(
    module: str,
    function: str,
    *,
    site: bool,
    stderr: int | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes] | None:
    """`module.function()` run in a new interpreter, its stdin and stdout piped to us.

    `site`: whether the helper sees the interpreter's site-packages (third-party
    imports) or only the standard library and this package (a faster start).
    None where no helper can start: no interpreter to run, this package not
    files on disk (a zip import), or no process to spare.
    """
    if not sys.executable or not Path(__file__).is_file():
        return None
    bootstrap = (
        f"import sys; sys.path.insert(0, sys.argv[1]); from {module} import {function}; "
        f"{function}()"
    )
    flags = ["-I"] if site else ["-I", "-S"]
    try:
        return subprocess.Popen(
            [sys.executable, *flags, "-c", bootstrap, str(_PACKAGE_ROOT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            pass_fds=pass_fds,
        )
    except OSError:
        return None
