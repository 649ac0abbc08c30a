"""Appliances whose PID 1 is systemd itself run the first-boot step from a unit.

supermin puts supermin-firstboot.service (hostfiles/init/) and its
sysinit.target.wants link into every format. The boot test builds Debian 12's
systemd with real packages as uid 65534 (`-f ext2`, the kernel from the real
linux-image .deb), boots the root with `init=/lib/systemd/systemd` so that our
/init never runs, and lets a unit of a synthetic package report on the serial
console, under qemu TCG with a hard timeout. The boot is repeated on the same
root: the second one must run nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support.debdata import build_deb, kernel_files, kernel_modules, real_pool
from support.product import scratch_dir, supermin_nobody
from support.qemu import between, boot, filesystem_uuid

from supermin.bootfiles import SYSTEMD_UNIT, SYSTEMD_UNIT_WANTS, script_text

BOOT_TIMEOUT = 240
# systemd and what its packages' scripts and dpkg call: dpkg itself
# (dpkg-maintscript-helper, update-alternatives), perl-base (debconf's frontend),
# diffutils and libc-bin (dpkg refuses to run without diff and ldconfig),
# coreutils, grep, sed and a /bin/sh (dash). With dpkg in, the runner configures
# the packages through dpkg --configure -a.
ROOTS = ["systemd", "systemd-sysv", "dash", "dpkg", "perl-base", "diffutils", "libc-bin"]
ROOTS += ["coreutils", "grep", "sed"]

POSTINST = """#!/bin/sh
set -e
mkdir -p /var/lib/tp
read -r pid1 </proc/1/comm
booted=no; [ -d /run/systemd/system ] && booted=yes
echo "tp-sd-hook postinst [$*] pid1=$pid1 systemd-seen=$booted" >> /var/lib/tp/boot.log
"""
# Runs once the system is up, after the first-boot unit; reports, then powers off.
REPORT = b"""#!/bin/sh
exec >/dev/ttyS0 2>&1
read -r pid1 </proc/1/comm
echo "TP-SD-MARKER pid1=$pid1"
echo TP-BOOT-LOG
cat /var/lib/tp/boot.log
echo TP-UNIT
systemctl show -p ActiveState -p Result -p ExecMainStatus supermin-firstboot.service
echo TP-ORDER
systemctl show -p ActiveEnterTimestampMonotonic supermin-firstboot.service
systemctl show -p InactiveExitTimestampMonotonic systemd-tmpfiles-setup.service
systemctl show -p ActiveEnterTimestampMonotonic sysinit.target
echo TP-FAILED
systemctl list-units --state=failed --plain --no-legend
echo TP-FIRSTBOOT-LOG
grep '^== ' /var/log/supermin-firstboot.log
echo TP-UPTIME
cat /proc/uptime
echo TP-END
sync
systemctl poweroff --force
"""
REPORT_UNIT = b"""[Unit]
Description=tp: report the first boot on the serial console, then power off
After=supermin-firstboot.service basic.target

[Service]
Type=oneshot
ExecStart=/usr/lib/tp/report
"""
# A drop-in pulls the report in: a .wants symlink would need a symlink in the .deb.
REPORT_WANTED = b"[Unit]\nWants=tp-sd-report.service\n"


def _synthetic_pool(pool: Path) -> None:
    build_deb(pool, "tp-sd-hook", "1.0", scripts={"postinst": POSTINST})
    build_deb(
        pool,
        "tp-sd-report",
        "1.0",
        files={
            "/usr/lib/tp/report": REPORT,
            "/usr/lib/systemd/system/tp-sd-report.service": REPORT_UNIT,
            "/usr/lib/systemd/system/multi-user.target.d/tp-sd-report.conf": REPORT_WANTED,
        },
        modes={"/usr/lib/tp/report": 0o755},
    )


@pytest.fixture(scope="module")
def appliance() -> Path:
    """Debian's systemd + the two synthetic packages, `-f ext2`, built as 65534."""
    work = scratch_dir("boot-systemd")
    pool = work / "pool"
    _synthetic_pool(pool)
    repos = ["--repo", str(real_pool(ROOTS)), "--repo", str(pool)]
    roots = [*ROOTS, "tp-sd-hook", "tp-sd-report"]
    supermin_nobody(["prepare", *roots, *repos, "-o", str(work / "d")])
    out = work / "appliance"
    start = time.monotonic()
    supermin_nobody(
        ["build", str(work / "d"), *repos, "-f", "ext2", "--size", "1G", "-o", str(out)],
        env={
            "SUPERMIN_KERNEL": str(kernel_files() / "vmlinuz"),
            "SUPERMIN_MODULES": str(kernel_modules()),
        },
    )
    print(f"\nsystemd ext2 build {time.monotonic() - start:.1f}s")
    return out


def _boot(appliance: Path) -> str:
    """Boot the root with systemd as PID 1 (init= bypasses the root's /init).

    No systemd.firstboot=off: the empty /etc/machine-id supermin adds next to
    systemd keeps systemd-firstboot from waiting at a console prompt.
    """
    append = (
        f"console=ttyS0 root=UUID={filesystem_uuid(appliance / 'root')} init=/lib/systemd/systemd "
        "panic=-1 quiet systemd.show_status=error"
    )
    drive = f"file={appliance / 'root'},if=virtio,format=raw"
    console, elapsed = boot(appliance, append, drives=[drive], timeout=BOOT_TIMEOUT)
    uptime = float(between(console, "TP-UPTIME\n", "TP-END\n")[0].split()[0])
    print(f"systemd boot to report {uptime:.1f}s (guest uptime), to power-off {elapsed:.1f}s (TCG)")
    return console


@pytest.fixture(scope="module")
def boots(appliance: Path) -> list[str]:
    consoles = [_boot(appliance), _boot(appliance)]
    for number, console in enumerate(consoles, 1):
        (appliance.parent / f"console-{number}.txt").write_text(console)  # for a post-mortem
    return consoles


def _unit_state(console: str) -> dict[str, str]:
    lines = between(console, "TP-UNIT\n", "TP-ORDER\n")
    return dict(line.split("=", 1) for line in lines)


def _order(console: str) -> list[int]:
    """Microseconds: the unit done, tmpfiles started, sysinit.target reached."""
    lines = between(console, "TP-ORDER\n", "TP-FAILED\n")
    return [int(line.split("=", 1)[1]) for line in lines]


def test_systemd_as_pid1_runs_the_first_boot_unit(boots: list[str]) -> None:
    first, _ = boots
    assert "TP-SD-MARKER pid1=systemd" in first, first[-6000:]
    assert "supermin-init:" not in first  # our /init was bypassed
    assert between(first, "TP-BOOT-LOG\n", "TP-UNIT\n") == [
        "tp-sd-hook postinst [configure ] pid1=systemd systemd-seen=no"
    ]
    assert _unit_state(first) == {
        "Result": "success",
        "ExecMainStatus": "0",
        "ActiveState": "active",
    }
    done, tmpfiles, sysinit = _order(first)
    assert 0 < done <= tmpfiles <= sysinit, (done, tmpfiles, sysinit)
    assert between(first, "TP-FAILED\n", "TP-FIRSTBOOT-LOG\n") == []
    log = "\n".join(between(first, "TP-FIRSTBOOT-LOG\n", "TP-UPTIME\n"))
    assert re.search(
        r"^== step \d+: dpkg \S+ configure \(/usr/bin/dpkg --configure -a\)", log, re.M
    )
    assert re.search(r"^== finished: \d+ scripts run, 0 failed, 0 skipped", log, re.M), log
    assert re.search(r"supermin-firstboot: \d+ scripts run, 0 failed", first)


def test_second_boot_skips_the_unit_by_its_condition(boots: list[str]) -> None:
    first, second = boots
    assert "TP-SD-MARKER pid1=systemd" in second, second[-6000:]
    assert between(second, "TP-BOOT-LOG\n", "TP-UNIT\n") == [
        "tp-sd-hook postinst [configure ] pid1=systemd systemd-seen=no"
    ]
    # ConditionPathExists=!…/firstboot.done failed: never started, nothing ran.
    assert _unit_state(second)["ActiveState"] == "inactive"
    assert "supermin-firstboot:" not in second
    log = between(second, "TP-FIRSTBOOT-LOG\n", "TP-UPTIME\n")
    assert log == between(first, "TP-FIRSTBOOT-LOG\n", "TP-UPTIME\n")


# ------------------------------------------------------------------ without qemu


def test_chroot_has_the_unit_and_its_wants_link() -> None:
    work = scratch_dir("systemd-unit-chroot")
    pool = work / "pool"
    build_deb(pool, "tp-sd-hook", "1.0", scripts={"postinst": POSTINST})
    supermin_nobody(["prepare", "tp-sd-hook", "--repo", str(pool), "-o", str(work / "d")])
    supermin_nobody(
        ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot"] + ["-o", str(work / "c")]
    )
    root = work / "c"
    unit = root / SYSTEMD_UNIT.relative_to("/")
    assert unit.read_text() == script_text("supermin-firstboot.service")
    assert unit.stat().st_mode & 0o777 == 0o644
    wants = root / SYSTEMD_UNIT_WANTS.relative_to("/")
    assert wants.is_symlink() and wants.readlink() == Path("../supermin-firstboot.service")
    assert wants.resolve() == unit.resolve()
    assert not (root / "etc/machine-id").exists()  # only next to systemd


def test_systemd_appliance_gets_an_empty_machine_id(appliance: Path) -> None:
    listing = subprocess.run(
        ["debugfs", "-R", "stat /etc/machine-id", str(appliance / "root")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Type: regular" in listing and "Size: 0" in listing, listing


def test_an_appliance_unit_of_the_same_name_wins() -> None:
    """Ours is in the lowest layer: a package (or host file, tarball) replaces it."""
    work = scratch_dir("systemd-unit-override")
    pool = work / "pool"
    own = b"[Service]\nExecStart=/bin/true\n"
    build_deb(pool, "tp-sd-own", "1.0", files={str(SYSTEMD_UNIT): own})
    supermin_nobody(["prepare", "tp-sd-own", "--repo", str(pool), "-o", str(work / "d")])
    supermin_nobody(
        ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot"] + ["-o", str(work / "c")]
    )
    assert (work / "c" / SYSTEMD_UNIT.relative_to("/")).read_bytes() == own


def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: package systemd)")
    # verify checks that ExecStart= is executable: give it a root with the runner.
    runner = tmp_path / "usr/lib/supermin/firstboot/run"
    runner.parent.mkdir(parents=True)
    runner.write_text(script_text("firstboot.sh"))
    runner.chmod(0o755)
    unit = tmp_path / SYSTEMD_UNIT.relative_to("/")
    unit.parent.mkdir(parents=True)
    unit.write_text(script_text("supermin-firstboot.service"))
    proc = subprocess.run(
        [analyze, "verify", "--man=no", f"--root={tmp_path}", str(unit)],
        capture_output=True,
        text=True,
    )
    # Unknown keys and bad values are only warnings (status 0): no output at all.
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
