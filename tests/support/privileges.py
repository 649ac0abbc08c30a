"""Run product code the way supermin is meant to run: unprivileged and offline.

On CI the tests run as root, so commands are wrapped to run as nobody (uid 65534) in
a fresh network namespace (only loopback, down): any accidental root-only operation or
network access then fails, as it would for a real user on an offline build host.
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

NOBODY = 65534


@functools.cache
def _userns_prefix() -> tuple[str, ...]:
    """How a non-root user gets an empty network namespace, or () if it cannot.

    ``unshare -n`` needs a user namespace when not root. --map-current-user keeps the
    uid, whereas -r would make the command see itself as root and possibly take root-only
    code paths. If user namespaces are disabled there is no isolation.
    """
    prefix = ("unshare", "--map-current-user", "-n", "--")
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return prefix if probe.returncode == 0 else ()


def unprivileged_offline(cmd: Sequence[str]) -> list[str]:
    """CMD wrapped to run without privileges and without network.

    As root: a new network namespace, then uid/gid 65534 with no supplementary groups.
    As another user: the same uid in a new user+network namespace when the kernel
    allows it, else CMD unchanged (it is unprivileged already, but may reach the net).
    """
    if os.geteuid() == 0:
        return [
            "unshare",
            "-n",
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--",
            *cmd,
        ]
    return [*_userns_prefix(), *cmd]


def run_unprivileged(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    timeout: float | None = 1800,
) -> subprocess.CompletedProcess[str]:
    """Run CMD via unprivileged_offline(), capturing text output.

    Without ENV the current environment is passed on, except that when dropping from
    root HOME becomes /nonexistent (nobody's home): root's HOME is unreadable to 65534.
    Without CWD the command runs in "/", since the caller's directory (often /root or
    a 0700 pytest tmp dir) may be unreachable for 65534. With CHECK a non-zero exit
    raises AssertionError showing the command, stdout and stderr.
    """
    if env is None:
        env = dict(os.environ)
        if os.geteuid() == 0:
            env["HOME"] = "/nonexistent"
    wrapped = unprivileged_offline(cmd)
    proc = subprocess.run(
        wrapped,
        env=dict(env),
        cwd="/" if cwd is None else cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{shlex.join(wrapped)} exited with status {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc


def make_world_dir(path: str | os.PathLike[str]) -> Path:
    """mkdir -p PATH for output the unprivileged process writes: PATH 0777, parents 0755.

    Only directories created by this call get the 0755 parent mode; existing parents
    must already be traversable for uid 65534.
    """
    target = Path(path).absolute()
    created = [p for p in target.parents if not p.exists()]
    target.mkdir(parents=True, exist_ok=True)
    # chmod, not mkdir(mode=...): the umask would strip the group/other bits.
    for parent in created:
        parent.chmod(0o755)
    target.chmod(0o777)
    return target
