"""The files that make an appliance run its first-boot step: the runner and /init.

Both are POSIX sh scripts shipped as package data (hostfiles/init/). The
runner goes into every format, beside the manifest it reads. `/init` only
goes into the bootable formats (the initrd, and the ext2 root that the
mini-initrd of supermin.miniinitrd switches to), in the lowest layer, so
that any /init the appliance brings itself (a package, host files, a
supermin.d tarball such as libguestfs's init.tar.gz) wins over ours. A systemd
unit (hostfiles/init/supermin-firstboot.service, also in every format and the
lowest layer) runs the runner when systemd is PID 1 without our /init.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

from supermin.entry import EntryKind, FileEntry
from supermin.firstboot import FIRSTBOOT_DIR
from supermin.merge import Layer
from supermin.report import Reporter
from supermin.spool import Spool

RUNNER = FIRSTBOOT_DIR / "run"
INIT = PurePosixPath("/init")
STATE_DIR = PurePosixPath("/var/lib/supermin")  # the runner's completion mark lives here
# The unit that runs the runner when systemd is PID 1 itself (see the unit's comments).
# Under /usr/lib directly, which every systemd reads, whether /lib is a symlink or not.
SYSTEMD_UNIT_NAME = "supermin-firstboot.service"
SYSTEMD_UNIT = PurePosixPath("/usr/lib/systemd/system") / SYSTEMD_UNIT_NAME
SYSTEMD_UNIT_WANTS = SYSTEMD_UNIT.parent / "sysinit.target.wants" / SYSTEMD_UNIT_NAME

# /init mounts the kernel filesystems on these; packages that ship them win.
_MOUNTPOINTS = {"/proc": 0o555, "/sys": 0o555, "/run": 0o755, "/tmp": 0o1777}

# Shells /init can be written for, best first: an appliance need not have /bin/sh.
_SHELLS = {
    "/bin/sh": "/bin/sh",
    "/usr/bin/sh": "/usr/bin/sh",
    "/bin/bash": "/bin/bash",
    "/usr/bin/bash": "/usr/bin/bash",
    "/bin/dash": "/bin/dash",
    "/usr/bin/dash": "/usr/bin/dash",
    "/bin/busybox": "/bin/busybox sh",
    "/usr/bin/busybox": "/usr/bin/busybox sh",
    "/sbin/busybox": "/sbin/busybox sh",
}


@dataclass(frozen=True)
class InitRequest:
    """Give the appliance our /init; it runs `program` (--init) after first boot.

    None: /sbin/init if the appliance has one when it boots, else its shell.
    """

    program: PurePosixPath | None = None


def script_text(name: str) -> str:
    """One of the files under hostfiles/init/ (package data of supermin.hostfiles)."""
    return resources.files("supermin.hostfiles").joinpath("init", name).read_text()


def _file(path: PurePosixPath, text: str, spool: Spool, mtime: int) -> FileEntry:
    return spool.file_entry(path, text.encode(), 0o755, mtime)


def runner_entries(spool: Spool, mtime: int) -> list[FileEntry]:
    """The first-boot runner and the directory where it marks completion."""
    return [
        _file(RUNNER, script_text("firstboot.sh"), spool, mtime),
        FileEntry(STATE_DIR, EntryKind.DIR, 0o755, mtime=mtime, origin="supermin"),
    ]


_SYSTEMD = {"/lib/systemd/systemd", "/usr/lib/systemd/systemd"}
MACHINE_ID = PurePosixPath("/etc/machine-id")


def systemd_unit_layer(spool: Spool, mtime: int, layers: Sequence[Layer] = ()) -> Layer:
    """The systemd unit that runs the runner, enabled in sysinit.target.

    In every format, as the runner is. It belongs in the lowest layer: a
    package, host file or tarball that ships the same paths replaces it.
    When `layers` (read twice: lists) hold systemd, an empty /etc/machine-id
    too, as Debian's and Fedora's images ship: systemd then makes one up at
    boot, where a missing file would make it stop at systemd-firstboot's
    console prompt.
    """
    unit = spool.file_entry(SYSTEMD_UNIT, script_text(SYSTEMD_UNIT_NAME).encode(), 0o644, mtime)
    # Relative, as systemctl enable writes them: right in a chroot and on the host.
    wants = FileEntry(
        SYSTEMD_UNIT_WANTS,
        EntryKind.SYMLINK,
        0o777,
        mtime=mtime,
        origin="supermin",
        target=f"../{SYSTEMD_UNIT_NAME}",
    )
    entries = [unit, wants]
    if any(str(e.path) in _SYSTEMD for layer in layers for e in layer.entries):
        entries.append(spool.file_entry(MACHINE_ID, b"", 0o444, mtime))
    return Layer(entries)


def appliance_shell(layers: Sequence[Layer]) -> str | None:
    """The command line of the best shell the layers provide, or None if they have none."""
    found = {
        str(entry.path)
        for layer in layers
        for entry in layer.entries
        if str(entry.path) in _SHELLS and entry.kind is not EntryKind.DIR
    }
    return next((command for path, command in _SHELLS.items() if path in found), None)


def render_init(shell: str, init: PurePosixPath | None) -> str:
    text = script_text("init.sh")
    return (
        text.replace("#!@SHELL@", f"#!{shell}", 1)
        .replace("@SHELL@", shlex.quote(shell))
        .replace("@INIT@", shlex.quote(str(init) if init else ""))
    )


def init_layer(
    init: PurePosixPath | None,
    layers: Sequence[Layer],
    spool: Spool,
    mtime: int,
    report: Reporter,
) -> Layer:
    """/init and the directories it mounts on, for the lowest layer of an initrd.

    `layers` (every other layer) must be lists, not iterators: they are read
    twice. `init` is what /init runs in the end (--init), or None for
    /sbin/init if the appliance has one, else its shell.
    """
    shell = appliance_shell(layers)
    if shell is None:
        report.warn(
            "the appliance has no shell (/bin/sh, bash, dash or busybox): "
            "its /init cannot run; add one to the packages"
        )
        shell = "/bin/sh"
    entries = [
        FileEntry(PurePosixPath(path), EntryKind.DIR, mode, mtime=mtime, origin="supermin")
        for path, mode in _MOUNTPOINTS.items()
    ]
    entries.append(_file(INIT, render_init(shell, init), spool, mtime))
    return Layer(entries)
