"""An appliance from the synthetic RPM repository boots and runs its scriptlets at first boot.

tp-busybox gives the appliance its only shell (/bin/sh -> busybox), which our
/init and the first-boot runner need. The appliance is built as uid 65534
without network, booted under TCG with Debian 12's kernel, and the serial
console carries what the test's init prints: the log the packages' sh
scriptlets append to and the runner's own log. The order is compared with a
real `dnf install` of the same roots, where rpm itself runs the scriptlets.
tp-svc, built here, adds a %pre that creates the user owning its files: the
runner gives them to that user after the scripts (supermin/owners.py).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from support.debdata import kernel_files
from support.product import scratch_dir, supermin_nobody
from support.qemu import between, boot, tarball
from support.rpmdata import dnf_install, synthetic_rpms
from support.svcrpm import accounts_tarball, build_svc_rpm

BOOT_TIMEOUT = 120
# tp-busybox: the shell; tp-scripts: sh %pre/%post/%posttrans and a Lua %pretrans;
# tp-luascripts: Lua %post/%posttrans; tp-greet: an sh %post, and libraries.
ROOTS = ["tp-busybox", "tp-scripts", "tp-luascripts", "tp-greet"]
TEST_INIT = b"""#!/bin/sh
echo "TP-MARKER pid $$"
echo TP-SCRIPTLETS-LOG
cat /var/lib/tp/scriptlets.log
echo TP-FIRSTBOOT-LOG
cat /var/log/supermin-firstboot.log
echo TP-OWNERS
ls -lnd /var/lib/tp-svc /var/lib/tp-svc/data
echo TP-END
echo o > /proc/sysrq-trigger
busybox sleep 60
"""
# What the sh scriptlets of a fresh install of ROOTS append (rpm passes 1 to each).
SH_LINES = ["tp-scripts pre 1", "tp-scripts post 1", "tp-greet post 1", "tp-scripts posttrans"]


def _sh_scriptlet_lines(lines: list[str]) -> list[str]:
    """The lines of sh %pre/%post/%posttrans: no Lua's, no trigger's (not deferred)."""
    return [line for line in lines if "(lua)" not in line and "trigger" not in line]


@pytest.fixture(scope="module")
def booted() -> tuple[Path, str]:
    work = scratch_dir("boot-rpm")
    # tp-svc (built here): its %pre creates the user owning its files, set at first boot.
    repos = ["--repo", str(synthetic_rpms() / "repo"), "--repo", str(build_svc_rpm(work).parent)]
    supermin_nobody(["prepare", *ROOTS, "tp-svc", *repos, "-o", str(work / "d")])
    (work / "d" / "init.tar").write_bytes(tarball({"tp/init": TEST_INIT}))
    (work / "d" / "accounts.tar").write_bytes(accounts_tarball())
    appliance = work / "appliance.d"
    start = time.monotonic()
    supermin_nobody(
        ["build", str(work / "d"), *repos, "-f", "initrd", "--init", "/tp/init"]
        + ["-o", str(appliance)],
        env={"SUPERMIN_KERNEL": str(kernel_files() / "vmlinuz")},
    )
    built = time.monotonic() - start
    console, elapsed = boot(appliance, "console=ttyS0 panic=-1 quiet", timeout=BOOT_TIMEOUT)
    (work / "console.txt").write_text(console)  # kept for a look after a failure
    print(f"\nrpm initrd build {built:.1f}s, boot to power-off {elapsed:.1f}s (TCG)")
    return work, console


def test_appliance_boots_into_the_init_after_first_boot(booted: tuple[Path, str]) -> None:
    _, console = booted
    assert "TP-MARKER pid 1" in console  # /init exec'ed it after the runner
    assert "supermin-init: package scripts failed" not in console
    summary = "5 scripts run, 0 failed, 4 skipped; owners: 3 set, 0 failed"
    assert f"supermin-firstboot: {summary}" in console


def test_sh_scriptlets_ran_once_in_rpms_order(booted: tuple[Path, str]) -> None:
    _, console = booted
    guest = between(console, "TP-SCRIPTLETS-LOG\n", "TP-FIRSTBOOT-LOG\n")
    assert sorted(guest) == sorted(SH_LINES), guest  # each exactly once, no Lua line
    # rpm runs a package's %pre and then its %post before the next package's,
    # every %posttrans after all of them.
    pre = guest.index("tp-scripts pre 1")
    assert guest[pre + 1] == "tp-scripts post 1"
    assert guest[-1] == "tp-scripts posttrans"


def test_same_sh_scriptlets_as_dnf(booted: tuple[Path, str], tmp_path: Path) -> None:
    work, console = booted
    guest = between(console, "TP-SCRIPTLETS-LOG\n", "TP-FIRSTBOOT-LOG\n")
    root = work / "dnf-root"
    dnf_install(synthetic_rpms() / "repo", ROOTS, root, tmp_path / "dnf")
    reference = (root / "var/lib/tp/scriptlets.log").read_text().splitlines()
    # dnf also runs the Lua scriptlets and tp-scripts' trigger on tp-greet.
    assert "tp-luascripts post(lua) 1" in reference
    ours = _sh_scriptlet_lines(reference)
    assert sorted(ours) == sorted(guest)
    # tp-greet and tp-scripts don't depend on each other, so rpm may run either
    # first: compare each package's own sequence, and where %posttrans falls.
    for package in ("tp-scripts", "tp-greet"):
        assert [x for x in ours if x.startswith(package + " ")] == [
            x for x in guest if x.startswith(package + " ")
        ]
    assert ours[-1] == guest[-1] == "tp-scripts posttrans"


def test_lua_scriptlets_are_reported_as_not_run(booted: tuple[Path, str]) -> None:
    _, console = booted
    log = "\n".join(between(console, "TP-FIRSTBOOT-LOG\n", "TP-OWNERS\n"))
    skipped = re.findall(r"^== step (\d+): (\S+) \S+ (\S+): skipped: needs rpm's Lua$", log, re.M)
    assert [(pkg, phase) for _, pkg, phase in skipped] == [
        ("tp-filesystem", "pretrans"),
        ("tp-scripts", "pretrans"),
        ("tp-luascripts", "post"),
        ("tp-luascripts", "posttrans"),
    ]
    ran = re.findall(r"^== step (\d+): (\S+) \S+ (\S+) \(/bin/sh scripts/\S+ 1\)", log, re.M)
    # tp-svc's %pre writes to /etc/passwd, not to scriptlets.log.
    assert [(pkg, phase) for _, pkg, phase in ran if pkg != "tp-svc"] == [
        (line.split()[0], line.split()[1]) for line in _guest_order(console)
    ]
    steps = [int(number) for number, _, _ in sorted(skipped + ran, key=lambda s: int(s[0]))]
    assert steps == list(range(1, 10))  # every step once, in manifest order
    # Dependencies first: tp-filesystem (a Requires(pre) of tp-scripts) before it.
    order = {(pkg, phase): int(n) for n, pkg, phase in skipped + ran}
    assert order[("tp-filesystem", "pretrans")] < order[("tp-scripts", "pretrans")]
    assert max(n for (_, phase), n in order.items() if phase != "posttrans") < min(
        n for (_, phase), n in order.items() if phase == "posttrans"
    )
    assert re.search(r"^== finished: 5 scripts run, 0 failed, 4 skipped; owners: ", log, re.M)


def test_files_of_a_user_created_by_a_scriptlet_get_its_owner(booted: tuple[Path, str]) -> None:
    _, console = booted
    log = "\n".join(between(console, "TP-FIRSTBOOT-LOG\n", "TP-OWNERS\n"))
    assert "== owner of /var/lib/tp-svc/data: tp-svc:tp-svc (990:990)" in log
    assert log.index("tp-svc 1.0-1 pre (/bin/sh") < log.index("== owner of")
    listing = between(console, "TP-OWNERS\n", "TP-END\n")
    assert [line.split()[2:4] for line in listing] == [["990", "990"], ["990", "990"]], listing


def _guest_order(console: str) -> list[str]:
    return between(console, "TP-SCRIPTLETS-LOG\n", "TP-FIRSTBOOT-LOG\n")
