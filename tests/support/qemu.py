"""Boot what supermin built under qemu (TCG only: the nested KVM here hangs), read the console."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

QEMU = "qemu-system-x86_64"  # Debian package qemu-system-x86


def boot(
    directory: Path, append: str, *, drives: Sequence[str] = (), timeout: int = 150
) -> tuple[str, float]:
    """Boot DIR/kernel + DIR/initrd (and `drives`); the serial console's text and the seconds.

    Every boot is bounded by `timeout`; the guest must power off by itself.
    """
    command = [
        "timeout",
        str(timeout),
        QEMU,
        "-accel",
        "tcg",
        "-m",
        "1024",
        "-nographic",
        "-no-reboot",
        "-kernel",
        str(directory / "kernel"),
        "-initrd",
        str(directory / "initrd"),
    ]
    for drive in drives:
        command += ["-drive", drive]
    command += ["-append", append]
    start = time.monotonic()
    proc = subprocess.run(
        command, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout + 30
    )
    elapsed = time.monotonic() - start
    console = proc.stdout.decode(errors="replace").replace("\r", "")
    assert proc.returncode == 0, (
        f"qemu exited with status {proc.returncode} after {elapsed:.1f}s "
        f"(124: the guest did not power off in time)\n{console[-6000:]}\n"
        + proc.stderr.decode(errors="replace")
    )
    return console, elapsed


def between(text: str, start: str, end: str) -> list[str]:
    """The console lines between two markers the test init prints."""
    assert start in text and end in text, text[-6000:]
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n").splitlines()


def tarball(members: Mapping[str, bytes | str]) -> bytes:
    """A supermin.d tar of files (bytes, mode 0755) and symlinks (str: the target)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, value in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(value, str):
                info.type, info.linkname = tarfile.SYMTYPE, value
                tar.addfile(info)
            else:
                info.size, info.mode = len(value), 0o755
                tar.addfile(info, io.BytesIO(value))
    return raw.getvalue()


def filesystem_uuid(image: Path) -> str:
    """The UUID blkid reads from a file-system image (for root=UUID=...)."""
    return subprocess.run(
        ["blkid", "-o", "value", "-s", "UUID", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
