"""File owners through the appliance's own /etc/passwd and /etc/group, fixed up at first boot.

Unit tests of the name resolution on entries; the runner's fix-up under each
POSIX shell an appliance may have; and a real build: an RPM made here with
rpmbuild whose %pre creates a user that owns its files, beside tp-busybox and
tp-setup from the synthetic set, built into a chroot as uid 65534 and its
first-boot runner run inside it as root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path, PurePosixPath

import pytest
from support.product import scratch_dir, supermin_nobody
from support.rpmdata import synthetic_rpms
from support.svcrpm import accounts_tarball, build_svc_rpm

from supermin.bootfiles import script_text
from supermin.entry import EntryKind, FileEntry
from supermin.firstboot import FIRSTBOOT_DIR
from supermin.outputs.mtree import read_mtree
from supermin.owners import (
    OWNERS_HEADER,
    OWNERS_PATH,
    Accounts,
    Fixup,
    owners_text,
    parse_id_table,
    read_accounts,
    resolve_owners,
    with_owners,
)
from supermin.packages import Package, PackageContents
from supermin.report import Reporter
from supermin.spool import Spool

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other users needs root")
SHELLS = [["dash"], ["bash", "--posix"], ["busybox", "sh"]]
CHROOT = shutil.which("chroot", path="/usr/sbin:/usr/bin:/sbin:/bin") or "chroot"

# ------------------------------------------------------------------ units


def _entry(
    path: str,
    user: str = "root",
    group: str = "root",
    *,
    uid: int = 0,
    gid: int = 0,
    origin: str = "pkg",
    mode: int = 0o644,
    kind: EntryKind = EntryKind.FILE,
    content: Path | None = None,
) -> FileEntry:
    return FileEntry(
        PurePosixPath(path),
        kind,
        mode,
        uid=uid,
        gid=gid,
        user=user,
        group=group,
        origin=origin,
        content=content,
    )


def test_passwd_and_group_lines_give_numbers_first_line_wins() -> None:
    text = (
        "root:x:0:0:root:/root:/bin/bash\n"
        "daemon:x:1:1::/:/usr/sbin/nologin\n"
        "# comment:x:5:5\n"
        "+nis:x:6:6::/:\n"
        "broken:x:notanumber:1::/:\n"
        "daemon:x:99:99::/:\n"
        "short:x\n"
        "staff:x:50:alice,bob\n"
    )
    assert parse_id_table(text) == {"root": 0, "daemon": 1, "staff": 50}


def test_accounts_come_from_the_entries_own_files(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\nsvc:x:1234:1235::/:/bin/sh\n")
    group = tmp_path / "group"
    group.write_text("root:x:0:\nsvc:x:1235:\n")
    entries = [
        _entry("/etc", kind=EntryKind.DIR),
        _entry("/etc/group", content=group),
        _entry("/etc/passwd", content=passwd),
    ]
    assert read_accounts(entries) == Accounts({"root": 0, "svc": 1234}, {"root": 0, "svc": 1235})
    assert read_accounts([_entry("/etc/passwd", kind=EntryKind.SYMLINK)]) == Accounts({}, {})


ACCOUNTS = Accounts({"root": 0, "daemon": 7, "svc": 1234}, {"root": 0, "daemon": 7, "svc": 1235})


def test_names_the_appliance_defines_get_its_numbers() -> None:
    entries = [
        _entry("/a", "daemon", "daemon", uid=2, gid=2, origin="rpm-pkg"),
        _entry("/b", "svc", "svc", uid=3333, gid=3333, origin="deb-pkg"),
        _entry("/c", "root", "svc", origin="rpm-pkg"),
    ]
    resolved, fixups = resolve_owners(entries, {"rpm-pkg": False, "deb-pkg": True}, ACCOUNTS)
    assert [(e.uid, e.gid) for e in resolved] == [(7, 7), (1234, 1235), (0, 1235)]
    assert [(e.user, e.group) for e in resolved] == [(e.user, e.group) for e in entries]
    assert fixups == []


def test_missing_names_deb_keeps_the_header_number_rpm_is_fixed_up_at_first_boot() -> None:
    entries = [
        _entry("/deb/file", "postfix", "postdrop", uid=105, gid=110, origin="deb-pkg"),
        _entry("/rpm/file", "tp-svc", "tp-svc", origin="rpm-pkg"),
        _entry("/rpm/group-only", "daemon", "tp-svc", uid=2, origin="rpm-pkg"),
        _entry("/rpm/static", "lp", "daemon", uid=4, gid=2, origin="rpm-pkg"),
        _entry("/rpm/suid", "tp-svc", "root", mode=0o4750, origin="rpm-pkg"),
        _entry(
            "/rpm/link", "tp-svc", "tp-svc", mode=0o777, kind=EntryKind.SYMLINK, origin="rpm-pkg"
        ),
        _entry("/rpm/numeric", "1500", "1500", uid=1500, gid=1500, origin="rpm-pkg"),
    ]
    resolved, fixups = resolve_owners(entries, {"rpm-pkg": False, "deb-pkg": True}, ACCOUNTS)
    owners = {str(e.path): (e.uid, e.gid) for e in resolved}
    assert owners == {
        "/deb/file": (105, 110),  # dpkg: the tar header's numbers, never fixed up
        "/rpm/file": (0, 0),  # rpm: root until first boot
        "/rpm/group-only": (7, 0),
        "/rpm/static": (4, 7),  # the backend's static number stays meanwhile
        "/rpm/suid": (0, 0),
        "/rpm/link": (0, 0),
        "/rpm/numeric": (1500, 1500),
    }
    assert fixups == [
        Fixup(PurePosixPath("/rpm/file"), "tp-svc", "tp-svc", None),
        Fixup(PurePosixPath("/rpm/group-only"), "", "tp-svc", None),
        Fixup(PurePosixPath("/rpm/static"), "lp", "", None),
        Fixup(PurePosixPath("/rpm/suid"), "tp-svc", "", 0o4750),  # chown clears setuid
        Fixup(PurePosixPath("/rpm/link"), "tp-svc", "tp-svc", None),
    ]
    assert owners_text(fixups).splitlines()[:2] == [
        OWNERS_HEADER.rstrip("\n"),
        "tp-svc\ttp-svc\t\t/rpm/file",
    ]
    assert "tp-svc\t\t4750\t/rpm/suid\n" in owners_text(fixups)


def test_host_files_tarballs_and_installed_packages_keep_their_numbers() -> None:
    entries = [
        _entry("/host", "daemon", "daemon", uid=1, gid=1, origin="hostfiles"),
        _entry("/tarball", "svc", "svc", uid=5, gid=5, origin="base.tar.gz"),
        _entry("/dir", "tp-svc", "tp-svc", uid=9, gid=9, origin="supermin"),
    ]
    resolved, fixups = resolve_owners(entries, {"supermin": False}, ACCOUNTS)
    assert resolved == entries and fixups == []


def test_owners_file_is_added_in_sort_order_only_when_needed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    installed = Package("host-pkg", "1", "x86_64", "rpm", "host", installed=True)
    archive = Package("rpm-pkg", "1", "noarch", "rpm", "repo", location=tmp_path / "x.rpm")
    opened = [(installed, PackageContents(())), (archive, PackageContents(()))]
    firstboot = str(FIRSTBOOT_DIR)
    paths = [
        "/",
        "/usr",
        "/usr/lib",
        "/usr/lib/supermin",
        firstboot,
        f"{firstboot}/manifest",
        f"{firstboot}/scripts",
        "/var",
    ]
    entries = [_entry(p, kind=EntryKind.FILE if "manifest" in p else EntryKind.DIR) for p in paths]
    entries += [
        _entry("/var/host", "tp-svc", "tp-svc", origin="host-pkg"),
        _entry("/var/svc", "tp-svc", "tp-svc", origin="rpm-pkg"),
    ]
    entries.sort(key=lambda e: e.path.parts)
    result = with_owners(entries, opened, spool, 42, Reporter())
    assert [e.path.parts for e in result] == sorted(e.path.parts for e in result)
    owners = next(e for e in result if e.path == OWNERS_PATH)
    assert owners.content is not None and owners.mtime == 42 and owners.mode == 0o644
    assert owners.content.read_text() == OWNERS_HEADER + "tp-svc\ttp-svc\t\t/var/svc\n"
    assert len(result) == len(entries) + 1
    without = [e for e in entries if e.origin != "rpm-pkg"]
    assert with_owners(without, opened, spool, 42, Reporter()) == without


# ------------------------------------------------------------------ the runner's fix-up


def _runner(shell: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    runner = tmp_path / "run"
    runner.write_text(script_text("firstboot.sh"))
    env = {
        "PATH": os.environ["PATH"],
        "SUPERMIN_FIRSTBOOT_DIR": str(tmp_path / "firstboot"),
        "SUPERMIN_FIRSTBOOT_LOG": str(tmp_path / "log/firstboot.log"),
        "SUPERMIN_FIRSTBOOT_STATE": str(tmp_path / "state"),
        "SUPERMIN_FIRSTBOOT_ETC": str(tmp_path / "etc"),
    }
    return subprocess.run(
        [*shell, str(runner)], env=env, capture_output=True, text=True, check=False, timeout=60
    )


@ROOT_ONLY
@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_runner_sets_owners_after_the_scripts_that_create_the_users(
    shell: list[str], tmp_path: Path
) -> None:
    etc, files, firstboot = tmp_path / "etc", tmp_path / "files", tmp_path / "firstboot"
    for directory in (etc, files, firstboot / "scripts"):
        directory.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nstaff:x:50:\n")
    # The package's %pre creates the user, as useradd would.
    create = (
        f"echo 'tp.svc:x:990:991::/:/bin/sh' >> {etc}/passwd\necho 'tp.svc:x:991:' >> {etc}/group\n"
    )
    (firstboot / "scripts/0001-tp-svc.pre").write_text(create)
    (firstboot / "manifest").write_text(
        "# step\tpackage\tversion\tphase\tinterpreter\targuments\tscript\n"
        "1\ttp-svc\t1.0-1\tpre\t/bin/sh\t1\tscripts/0001-tp-svc.pre\n"
    )
    for name in ("data", "suid", "group only", "ghost-user"):
        (files / name).write_text(name)
    (files / "suid").chmod(0o4750)
    (files / "link").symlink_to("data")
    (firstboot / "owners").write_text(
        OWNERS_HEADER
        + f"tp.svc\ttp.svc\t\t{files}/data\n"
        + f"tp.svc\t\t4750\t{files}/suid\n"
        + f"\tstaff\t\t{files}/group only\n"
        + f"tp.svc\ttp.svc\t\t{files}/link\n"
        + f"nobody-here\ttp.svc\t\t{files}/ghost-user\n"
        + f"tp.svc\ttp.svc\t\t{files}/removed-by-a-script\n"
    )
    first = _runner(shell, tmp_path)
    assert first.returncode == 1, first  # one name is still unknown
    owner = {name: os.lstat(files / name) for name in os.listdir(files)}
    assert (owner["data"].st_uid, owner["data"].st_gid) == (990, 991)
    assert (owner["suid"].st_uid, owner["suid"].st_gid) == (990, 0)
    assert stat.S_IMODE(owner["suid"].st_mode) == 0o4750  # set again after chown
    assert (owner["group only"].st_uid, owner["group only"].st_gid) == (0, 50)
    assert (owner["link"].st_uid, owner["link"].st_gid) == (990, 991)  # the link itself
    assert (owner["ghost-user"].st_uid, owner["ghost-user"].st_gid) == (0, 991)
    log = (tmp_path / "log/firstboot.log").read_text()
    assert f"== owner of {files}/data: tp.svc:tp.svc (990:991)\n" in log
    assert f"== owner of {files}/suid: tp.svc:(kept) (990, mode 4750)\n" in log
    assert f"== owner of {files}/group only: (kept):staff (:50)\n" in log
    assert f"== owner of {files}/ghost-user: user nobody-here still unknown (failed)\n" in log
    assert f"== owner of {files}/removed-by-a-script: gone, nothing to set\n" in log
    assert log.index("== step 1: status 0") < log.index("== owner of")
    assert f"== owner of {files}/ghost-user: (kept):tp.svc (:991)\n" in log  # what is known
    assert "== finished: 1 scripts run, 0 failed, 0 skipped; owners: 5 set, 1 failed" in log
    # Done is done: a second boot neither runs the script nor touches the owners.
    os.lchown(files / "data", 0, 0)
    second = _runner(shell, tmp_path)
    assert second.returncode == 0 and second.stdout == "", second
    assert os.lstat(files / "data").st_uid == 0
    assert (tmp_path / "log/firstboot.log").read_text() == log
    assert (etc / "passwd").read_text().count("tp.svc") == 1


@ROOT_ONLY
@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_an_interrupted_run_sets_the_owners_when_it_resumes(
    shell: list[str], tmp_path: Path
) -> None:
    etc, firstboot = tmp_path / "etc", tmp_path / "firstboot"
    etc.mkdir()
    firstboot.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\ntp-svc:x:990:990::/:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\ntp-svc:x:990:\n")
    (firstboot / "manifest").write_text("1\ttp-svc\t1.0-1\tpre\t/bin/false\t\t\n")
    data = tmp_path / "data"
    data.write_text("x")
    (firstboot / "owners").write_text(f"tp-svc\ttp-svc\t\t{data}\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state/firstboot.progress").write_text("1\n")  # power lost after step 1
    result = _runner(shell, tmp_path)
    assert result.returncode == 0, result
    assert (os.stat(data).st_uid, os.stat(data).st_gid) == (990, 990)
    assert "owners: 1 set, 0 failed" in (tmp_path / "state/firstboot.done").read_text()


# ------------------------------------------------------------------ a real build


@pytest.fixture(scope="module")
def svc_chroot() -> tuple[Path, str]:
    """tp-svc + tp-busybox (+ tp-setup, tp-filesystem) built as uid 65534 into a chroot."""
    work = scratch_dir("owners-chroot")
    svc = build_svc_rpm(work)
    repos = ["--repo", str(synthetic_rpms() / "repo"), "--repo", str(svc.parent)]
    roots = ["tp-svc", "tp-busybox"]
    supermin_nobody(["prepare", *roots, *repos, "-o", str(work / "d")])
    (work / "d" / "accounts.tar").write_bytes(accounts_tarball())
    result = supermin_nobody(
        ["build", str(work / "d"), *repos, "-f", "chroot", "-o", str(work / "c"), "-v"]
    )
    return work, result.stderr


def test_build_resolves_names_and_records_the_missing_ones(svc_chroot: tuple[Path, str]) -> None:
    work, stderr = svc_chroot
    assert "3 files are owned by names no /etc/passwd" in stderr and "(tp-svc)" in stderr
    records = {r["path"]: r for r in read_mtree(work / "c.mtree")}
    owners = {
        path: (records[path]["uid"], records[path]["gid"], records[path]["mode"])
        for path in (
            "/var/lib/tp-svc",
            "/var/lib/tp-svc/data",
            "/var/lib/tp-svc/known",
            "/usr/libexec/tp-svc/helper",
        )
    }
    assert owners == {
        "/var/lib/tp-svc": (0, 0, 0o750),
        "/var/lib/tp-svc/data": (0, 0, 0o640),
        "/var/lib/tp-svc/known": (7, 4321, 0o640),  # the appliance's numbers, not 2 and 0
        "/usr/libexec/tp-svc/helper": (0, 0, 0o4750),
    }
    text = (work / "c" / str(OWNERS_PATH).lstrip("/")).read_text()
    assert text == OWNERS_HEADER + (
        "tp-svc\t\t4750\t/usr/libexec/tp-svc/helper\n"
        "tp-svc\ttp-svc\t\t/var/lib/tp-svc\n"
        "tp-svc\ttp-svc\t\t/var/lib/tp-svc/data\n"
    )


@ROOT_ONLY
def test_first_boot_in_the_chroot_gives_the_files_to_the_new_user(
    svc_chroot: tuple[Path, str],
) -> None:
    work, _ = svc_chroot
    root = work / "c"
    (root / "dev").mkdir(exist_ok=True)
    os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CHROOT, str(root), "/bin/sh", "/usr/lib/supermin/firstboot/run"],
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    first = run()
    log = (root / "var/log/supermin-firstboot.log").read_text()
    assert first.returncode == 0, first.stdout + first.stderr + log
    data, directory = root / "var/lib/tp-svc/data", root / "var/lib/tp-svc"
    assert (data.stat().st_uid, data.stat().st_gid) == (990, 990)
    assert (directory.stat().st_uid, directory.stat().st_gid) == (990, 990)
    helper = (root / "usr/libexec/tp-svc/helper").stat()
    assert (helper.st_uid, stat.S_IMODE(helper.st_mode)) == (990, 0o4750)
    assert "== owner of /var/lib/tp-svc/data: tp-svc:tp-svc (990:990)\n" in log
    assert log.index("tp-svc 1.0-1 pre (/bin/sh") < log.index("== owner of")
    assert "owners: 3 set, 0 failed" in log
    os.chown(data, 0, 0)
    second = run()
    assert second.returncode == 0 and second.stdout == ""
    assert data.stat().st_uid == 0  # the completion mark: nothing is set again
