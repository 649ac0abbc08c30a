"""rpm's FILECAPS text into the `security.capability` value rpm would set.

rpm keeps file capabilities as cap_to_text(3) text ("cap_net_raw=ep",
"= cap_sys_admin+eip") and at install time hands them to libcap's
cap_from_text(3) and cap_set_fd(3). This does the same without libcap:
parse the clauses, then pack struct vfs_cap_data revision 2 as the kernel
stores it (linux/capability.h), which is what setcap writes as root.
"""

from __future__ import annotations

import re
import struct

__all__ = ["CAPABILITY_XATTR", "CAPABILITY_BITS", "capability_xattr"]

CAPABILITY_XATTR = "security.capability"

# linux/capability.h, in bit order: cap_chown is 0, cap_checkpoint_restore 40.
CAPABILITY_BITS: dict[str, int] = {
    f"cap_{name}": bit
    for bit, name in enumerate(
        [
            "chown",
            "dac_override",
            "dac_read_search",
            "fowner",
            "fsetid",
            "kill",
            "setgid",
            "setuid",
            "setpcap",
            "linux_immutable",
            "net_bind_service",
            "net_broadcast",
            "net_admin",
            "net_raw",
            "ipc_lock",
            "ipc_owner",
            "sys_module",
            "sys_rawio",
            "sys_chroot",
            "sys_ptrace",
            "sys_pacct",
            "sys_admin",
            "sys_boot",
            "sys_nice",
            "sys_resource",
            "sys_time",
            "sys_tty_config",
            "mknod",
            "lease",
            "audit_write",
            "audit_control",
            "setfcap",
            "mac_override",
            "mac_admin",
            "syslog",
            "wake_alarm",
            "block_suspend",
            "audit_read",
            "perfmon",
            "bpf",
            "checkpoint_restore",
        ]
    )
}
_ALL = (1 << len(CAPABILITY_BITS)) - 1
_VFS_CAP_REVISION_2 = 0x02000000
_VFS_CAP_FLAGS_EFFECTIVE = 0x000001
_VFS_CAP_DATA = struct.Struct("<5I")  # magic_etc, then (permitted, inheritable) lo, hi
_MAX_BIT = 63  # two 32-bit words
# A clause: an optional comma-separated list of names, then one or more actions.
_CLAUSE = re.compile(r"(?P<names>[^=+-]*)(?P<actions>(?:[=+-][eip]*)+)")
_ACTION = re.compile(r"([=+-])([eip]*)")


def capability_xattr(text: str) -> bytes:
    """The security.capability value for cap_from_text(3) `text`; ValueError if invalid."""
    sets = {"e": 0, "i": 0, "p": 0}
    for clause in text.lower().split():
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            raise ValueError(f"capability text {text!r}: cannot parse {clause!r}")
        names = match["names"]
        actions = _ACTION.findall(match["actions"])
        if names:
            mask = _mask(names, text)
        elif actions[0][0] == "=":
            mask = _ALL  # "=ep" alone means "all=ep"
        else:
            raise ValueError(f"capability text {text!r}: {clause!r} names no capability")
        for operator, flags in actions:
            for flag in sets:
                if operator == "=":
                    sets[flag] &= ~mask
                if flag in flags:
                    sets[flag] = sets[flag] & ~mask if operator == "-" else sets[flag] | mask
    permitted, inheritable, effective = sets["p"], sets["i"], sets["e"]
    # A file has one effective bit: libcap refuses one that leaves out a held capability.
    if effective and (permitted | inheritable) & ~effective:
        raise ValueError(
            f"capability text {text!r}: the effective set must be empty or hold "
            "every permitted and inheritable capability"
        )
    magic = _VFS_CAP_REVISION_2 | (_VFS_CAP_FLAGS_EFFECTIVE if effective else 0)
    return _VFS_CAP_DATA.pack(
        magic,
        permitted & 0xFFFFFFFF,
        inheritable & 0xFFFFFFFF,
        permitted >> 32,
        inheritable >> 32,
    )


def _mask(names: str, text: str) -> int:
    mask = 0
    for name in names.split(","):
        if name == "all":
            mask |= _ALL
        elif name in CAPABILITY_BITS:
            mask |= 1 << CAPABILITY_BITS[name]
        elif name.isdigit() and int(name) <= _MAX_BIT:
            mask |= 1 << int(name)
        else:
            raise ValueError(f"capability text {text!r}: unknown capability {name!r}")
    return mask
