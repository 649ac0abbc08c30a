"""Extended attributes (file capabilities above all) from package to every output.

The capability conversion is judged by libcap's own setcap; the outputs by the
tools that read them back: the kernel (getxattr, getcap) on a chroot and on a
loop-mounted ext2 image, GNU tar --xattrs, e2fsck and debugfs.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import tarfile
import uuid
from pathlib import Path, PurePosixPath

import pytest
from support.product import prepare_in, scratch_dir, supermin_here
from support.rpmdata import real_rpms, synthetic_binary_rpms, synthetic_rpms

from supermin.backends.rpm.archive import read_rpm
from supermin.backends.rpm.filecaps import CAPABILITY_BITS, CAPABILITY_XATTR, capability_xattr
from supermin.entry import EntryKind, FileEntry
from supermin.errors import OutputError
from supermin.inputs import tarball_entries
from supermin.merge import Layer, merge
from supermin.outputs.archives import dropped_xattrs, write_cpio, write_tar
from supermin.outputs.chroot import dropped_xattrs as chroot_dropped_xattrs
from supermin.outputs.chroot import write_chroot
from supermin.outputs.compression import Compression
from supermin.outputs.ext2 import write_ext2
from supermin.spool import Spool

T0 = 1_600_000_000
MIB = 1 << 20
FS_UUID = uuid.UUID("0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5").bytes
NET_RAW = capability_xattr("cap_net_raw=ep")
CAPS_HELPER = "/usr/libexec/tp/caps-helper"

# cap_from_text(3) forms: as rpm writes them (cap_to_text) and as packagers type them.
CAP_TEXTS = [
    "cap_net_raw=ep",
    "cap_net_admin,cap_net_raw+ep",
    "= cap_sys_admin+eip",
    "=",
    "=ep",
    "all=ep",
    "all=p cap_kill-p",
    "cap_chown=p",
    "cap_setuid,cap_setgid+i",
    "cap_bpf,cap_perfmon,cap_checkpoint_restore=eip",
    "cap_sys_ptrace=ep cap_sys_ptrace-e cap_sys_ptrace+e",
    "CAP_NET_BIND_SERVICE=ep",
    "cap_ipc_lock=i cap_ipc_lock+p",
    "13=ep",
]


def setcap_value(text: str, where: Path) -> bytes:
    """What libcap's setcap stores for `text`, read back from the kernel."""
    target = where / "setcap-target"
    target.unlink(missing_ok=True)
    target.write_bytes(b"")
    subprocess.run(["setcap", text, str(target)], check=True, capture_output=True)
    return os.getxattr(target, CAPABILITY_XATTR)


def getcap(path: Path) -> str:
    out = subprocess.run(["getcap", str(path)], check=True, capture_output=True, text=True)
    return out.stdout.split(maxsplit=1)[1].strip() if out.stdout.strip() else ""


# ------------------------------------------------------------------ FILECAPS -> xattr


def test_every_capability_name_matches_setcap(tmp_path: Path) -> None:
    assert CAPABILITY_BITS["cap_chown"] == 0
    assert CAPABILITY_BITS["cap_checkpoint_restore"] == 40
    assert sorted(CAPABILITY_BITS.values()) == list(range(41))
    for name in CAPABILITY_BITS:
        assert capability_xattr(f"{name}=ep") == setcap_value(f"{name}=ep", tmp_path), name


@pytest.mark.parametrize("text", CAP_TEXTS)
def test_capability_text_matches_setcap(text: str, tmp_path: Path) -> None:
    assert capability_xattr(text) == setcap_value(text, tmp_path)


def _package_caps() -> dict[str, str]:
    """Every FILECAPS text of the synthetic set and of rpm's own capstest package."""
    spool = Spool(scratch_dir("xattr-spool"))
    capstest = [p for p in real_rpms() if p.name.startswith("capstest-")]
    assert capstest
    found: dict[str, str] = {}
    for package in [*synthetic_binary_rpms(), *capstest]:
        contents = read_rpm(package, spool, package.name)
        found.update({f"{package.name}:{p}": text for p, text in contents.capabilities.items()})
    return found


def test_package_capabilities_match_setcap(tmp_path: Path) -> None:
    caps = _package_caps()
    assert any(key.endswith(CAPS_HELPER) for key in caps)
    assert "=" in caps.values()  # capstest's empty sets
    for where, text in caps.items():
        assert capability_xattr(text) == setcap_value(text, tmp_path), where


@pytest.mark.parametrize(
    "text", ["cap_no_such=ep", "cap_chown", "+ep", "cap_chown=x", "cap_chown=p cap_kill=ep"]
)
def test_invalid_capability_text_is_refused_as_setcap_does(text: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        capability_xattr(text)
    target = tmp_path / "f"
    target.write_bytes(b"")
    assert subprocess.run(["setcap", text, str(target)], capture_output=True).returncode != 0


def test_rpm_entry_carries_its_capability(tmp_path: Path) -> None:
    package = next(p for p in synthetic_binary_rpms() if p.name.startswith("tp-perms-"))
    contents = read_rpm(package, Spool(tmp_path / "spool"), "tp-perms")
    by_path = {str(e.path): e for e in contents.entries}
    assert by_path[CAPS_HELPER].xattrs == ((CAPABILITY_XATTR, NET_RAW),)
    others = [e for p, e in by_path.items() if p != CAPS_HELPER]
    assert all(e.xattrs == () for e in others)


# ------------------------------------------------------------------ entries


def _entry(path: str, kind: EntryKind, mode: int, **fields: object) -> FileEntry:
    fields.setdefault("mtime", T0)
    return FileEntry(PurePosixPath(path), kind, mode, **fields)  # type: ignore[arg-type]


def _file(directory: Path, path: str, data: bytes, **fields: object) -> FileEntry:
    directory.mkdir(exist_ok=True)
    source = directory / f"c{len(list(directory.iterdir()))}"
    source.write_bytes(data)
    return _entry(path, EntryKind.FILE, 0o755, size=len(data), content=source, **fields)


USER_ATTRS = (("user.mime_type", b"text/plain"), ("user.test", b"v"))


@pytest.fixture
def entries(tmp_path: Path) -> list[FileEntry]:
    """A tree with capabilities, user and trusted attributes; merged, so hardlinks copy."""
    content = tmp_path / "content"
    helper = _file(content, "/usr/bin/ping", b"#!/bin/sh\n", xattrs=((CAPABILITY_XATTR, NET_RAW),))
    layer = [
        _entry("/", EntryKind.DIR, 0o755),
        _entry("/usr", EntryKind.DIR, 0o755),
        _entry("/usr/bin", EntryKind.DIR, 0o755, xattrs=USER_ATTRS),
        helper,
        _entry("/usr/bin/ping6", EntryKind.HARDLINK, 0o755, target="/usr/bin/ping"),
        _file(content, "/usr/bin/plain", b"plain\n"),
        _file(content, "/usr/bin/tagged", b"tagged\n", xattrs=USER_ATTRS),
        _entry(
            "/usr/bin/link",
            EntryKind.SYMLINK,
            0o777,
            target="ping",
            xattrs=(("trusted.note", b"\x00\x01"),),
        ),
    ]
    return merge([Layer(layer)])


def test_hardlinks_carry_their_files_xattrs(entries: list[FileEntry]) -> None:
    by_path = {str(e.path): e for e in entries}
    assert by_path["/usr/bin/ping6"].kind is EntryKind.HARDLINK
    assert by_path["/usr/bin/ping6"].xattrs == by_path["/usr/bin/ping"].xattrs
    hash(by_path["/usr/bin/ping6"])  # still a hashable record


def _xattrs_of(path: Path) -> dict[str, bytes]:
    return {
        name: os.getxattr(path, name, follow_symlinks=False)
        for name in os.listxattr(path, follow_symlinks=False)
        if not name.startswith("system.")  # ACLs the file system may add
    }


def _check_tree(root: Path, *, privileged: bool) -> None:
    expected_ping = {CAPABILITY_XATTR: NET_RAW} if privileged else {}
    assert _xattrs_of(root / "usr/bin/ping") == expected_ping
    assert _xattrs_of(root / "usr/bin/ping6") == expected_ping
    assert _xattrs_of(root / "usr/bin") == dict(USER_ATTRS)
    assert _xattrs_of(root / "usr/bin/tagged") == dict(USER_ATTRS)
    assert _xattrs_of(root / "usr/bin/plain") == {}
    note = {"trusted.note": b"\x00\x01"} if privileged else {}
    assert _xattrs_of(root / "usr/bin/link") == note
    if privileged:
        assert getcap(root / "usr/bin/ping") == "cap_net_raw=ep"


# ------------------------------------------------------------------ chroot


def test_chroot_as_root_sets_every_xattr(entries: list[FileEntry], tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_chroot(entries, root, privileged=True)
    _check_tree(root, privileged=True)
    assert (root / "usr/bin/ping").stat().st_mode & 0o7777 == 0o755
    assert chroot_dropped_xattrs(entries, privileged=True) == []


def test_chroot_without_root_sets_user_xattrs_only(
    entries: list[FileEntry], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_chroot(entries, root, privileged=False)
    _check_tree(root, privileged=False)
    assert chroot_dropped_xattrs(entries, privileged=False) == ["/usr/bin/link", "/usr/bin/ping"]


# ------------------------------------------------------------------ tar and cpio


def test_tar_xattrs_restored_by_gnu_tar(entries: list[FileEntry], tmp_path: Path) -> None:
    tarball = tmp_path / "out.tar"
    write_tar(entries, tarball, Compression.NONE)
    root = tmp_path / "x"
    root.mkdir()
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(tarball), "-C", str(root)],
        check=True,
        capture_output=True,
    )
    _check_tree(root, privileged=True)


def test_tar_xattrs_read_back_through_the_tar_reader(
    entries: list[FileEntry], tmp_path: Path
) -> None:
    tarball = tmp_path / "out.tar"
    write_tar(entries, tarball, Compression.NONE)
    again = merge([Layer(tarball_entries(tarball, Spool(tmp_path / "spool")))])
    assert {str(e.path): e.xattrs for e in again} == {str(e.path): e.xattrs for e in entries}


def test_pax_schily_xattrs_are_read(tmp_path: Path) -> None:
    """A hand-made pax tarball, as a .deb data.tar or a supermin.d tarball may be."""
    tarball = tmp_path / "in.tar"
    with tarfile.open(tarball, "w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("usr/bin/tool")
        info.size = 3
        info.pax_headers = {"SCHILY.xattr.user.test": "v", "SCHILY.xattr.user.a": "first"}
        archive.addfile(info, io.BytesIO(b"abc"))
        archive.addfile(tarfile.TarInfo("usr/bin/plain"), io.BytesIO(b""))
    found = {str(e.path): e.xattrs for e in tarball_entries(tarball, Spool(tmp_path / "s"))}
    assert found == {
        "/usr/bin/tool": (("user.a", b"first"), ("user.test", b"v")),
        "/usr/bin/plain": (),
    }


def test_cpio_drops_xattrs_but_says_which(entries: list[FileEntry], tmp_path: Path) -> None:
    assert dropped_xattrs(entries) == [
        "/usr/bin",
        "/usr/bin/link",
        "/usr/bin/ping",
        "/usr/bin/tagged",
    ]
    write_cpio(entries, tmp_path / "initrd", Compression.NONE)
    assert (tmp_path / "initrd").stat().st_size > 0


# ------------------------------------------------------------------ ext2


def _ext2(entries: list[FileEntry], image: Path) -> None:
    write_ext2(entries, image, size=8 * MIB, uuid=FS_UUID, timestamp=T0)


def _e2fsck(image: Path) -> None:
    proc = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _debugfs(image: Path, request: str) -> str:
    proc = subprocess.run(
        ["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True
    )
    return proc.stdout


def _features(image: Path) -> list[str]:
    out = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("Filesystem features:"))
    return line.split(":", 1)[1].split()


def test_ext2_holds_xattrs_in_the_inode(entries: list[FileEntry], tmp_path: Path) -> None:
    image = tmp_path / "root.img"
    _ext2(entries, image)
    _e2fsck(image)
    assert "ext_attr" in _features(image)
    dump = tmp_path / "cap.bin"
    _debugfs(image, f"ea_get -f {dump} /usr/bin/ping {CAPABILITY_XATTR}")
    assert dump.read_bytes() == NET_RAW
    listing = _debugfs(image, "ea_list /usr/bin/tagged")
    assert "user.test" in listing and "user.mime_type" in listing
    assert "trusted.note" in _debugfs(image, "ea_list /usr/bin/link")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-o", "loop,ro", "-t", "ext2", str(image), str(mountpoint)],
        check=True,
        capture_output=True,
    )
    try:
        _check_tree(mountpoint, privileged=True)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_ext2_without_xattrs_keeps_the_feature_off(
    entries: list[FileEntry], tmp_path: Path
) -> None:
    plain = [dataclasses.replace(e, xattrs=()) for e in entries]
    image = tmp_path / "plain.img"
    _ext2(plain, image)
    _e2fsck(image)
    assert "ext_attr" not in _features(image)


@pytest.mark.parametrize(
    ("xattrs", "why"),
    [
        ((("user.big", b"x" * 80),), "more than the"),
        (tuple((f"user.n{i}", b"v") for i in range(5)), "more than the"),
        ((("system.posix_acl_access", b"\x02\0\0\0"),), "no ext2 name index"),
    ],
)
def test_ext2_refuses_xattrs_it_cannot_hold(
    xattrs: tuple[tuple[str, bytes], ...], why: str, tmp_path: Path
) -> None:
    tree = [
        _entry("/", EntryKind.DIR, 0o755),
        _file(tmp_path / "c", "/too-much", b"x", xattrs=xattrs),
    ]
    with pytest.raises(OutputError, match=why) as caught:
        _ext2(tree, tmp_path / "root.img")
    assert "/too-much" in str(caught.value)
    assert not (tmp_path / "root.img").exists()


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def prepared() -> tuple[Path, Path]:
    repo = synthetic_rpms() / "repo"
    work = scratch_dir("rpm-xattrs")
    prepare_in(work, ["tp-perms"], repo)
    return work, repo


def _build(work: Path, repo: Path, fmt: str, output: Path) -> None:
    supermin_here(["build", str(work / "d"), "--repo", str(repo), "-f", fmt, "-o", str(output)])


def test_rpm_capability_reaches_the_chroot(prepared: tuple[Path, Path]) -> None:
    work, repo = prepared
    _build(work, repo, "chroot", work / "chroot")
    assert getcap(work / "chroot" / CAPS_HELPER.lstrip("/")) == "cap_net_raw=ep"


def test_rpm_capability_reaches_the_tarball(prepared: tuple[Path, Path]) -> None:
    work, repo = prepared
    tarball = work / "root.tar"
    _build(work, repo, "tar", tarball)
    root = work / "from-tar"
    root.mkdir()
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(tarball), "-C", str(root)],
        check=True,
        capture_output=True,
    )
    assert getcap(root / CAPS_HELPER.lstrip("/")) == "cap_net_raw=ep"


def test_rpm_capability_reaches_the_ext2_image(prepared: tuple[Path, Path]) -> None:
    work, repo = prepared
    _build(work, repo, "ext2", work / "ext2")
    image = work / "ext2" / "root"
    _e2fsck(image)
    dump = work / "cap.bin"
    _debugfs(image, f"ea_get -f {dump} {CAPS_HELPER} {CAPABILITY_XATTR}")
    assert dump.read_bytes() == NET_RAW


def test_rpm_capability_reaches_the_ext2_writer(tmp_path: Path) -> None:
    """The same without a build (and so without the kernel an `-f ext2` build takes)."""
    package = next(p for p in synthetic_binary_rpms() if p.name.startswith("tp-perms-"))
    contents = read_rpm(package, Spool(tmp_path / "spool"), "tp-perms")
    image = tmp_path / "root.img"
    _ext2(merge([Layer(contents.entries)]), image)
    _e2fsck(image)
    dump = tmp_path / "cap.bin"
    _debugfs(image, f"ea_get -f {dump} {CAPS_HELPER} {CAPABILITY_XATTR}")
    assert dump.read_bytes() == NET_RAW
