"""A Debian base system configures itself at first boot, under qemu.

Roots: every `Priority: required` package of Debian 12, plus dpkg and bash. The
appliance is built as uid 65534 (`-f initrd`, the kernel from the real linux-image
.deb via $SUPERMIN_KERNEL); at boot our /init runs the first-boot runner (the
preinsts, then `dpkg --configure -a`) and then the test's init, which reports what
dpkg thinks of the system on the serial console and powers off.
"""

from __future__ import annotations

import re
import time

from support.debdata import kernel_files, real_pool, required_roots
from support.product import scratch_dir, supermin_nobody
from support.qemu import between, boot, tarball

BOOT_TIMEOUT = 180
TEST_INIT = b"""#!/bin/sh
echo "TP-MARKER pid $$"
echo TP-AUDIT
dpkg --audit 2>&1
echo TP-STATUS
dpkg-query -W -f='${Status}\\n' | sort | uniq -c
echo TP-PACKAGES
dpkg-query -W -f='${Package}\\n' | sort
echo TP-PASSWD
test -f /etc/passwd && echo passwd-ok
echo TP-FIRSTBOOT-LOG
grep '^== ' /var/log/supermin-firstboot.log
echo TP-UPTIME
cat /proc/uptime
echo TP-END
echo o > /proc/sysrq-trigger
sleep 60
"""


def test_debian_base_system_is_configured_by_dpkg_at_first_boot() -> None:
    roots = required_roots()
    pool = real_pool(roots)
    closure = sorted(deb.name.split("_", 1)[0] for deb in pool.rglob("*.deb"))
    work = scratch_dir("boot-debian-base")
    supermin_nobody(["prepare", *roots, "--repo", str(pool), "-o", str(work / "d")])
    (work / "d" / "init.tar").write_bytes(tarball({"tp/init": TEST_INIT}))
    appliance = work / "appliance"
    start = time.monotonic()
    supermin_nobody(
        ["build", str(work / "d"), "--repo", str(pool), "-f", "initrd", "--init", "/tp/init"]
        + ["-o", str(appliance)],
        env={"SUPERMIN_KERNEL": str(kernel_files() / "vmlinuz")},
    )
    built = time.monotonic() - start
    size = (appliance / "initrd").stat().st_size
    console, booted = boot(appliance, "console=ttyS0 panic=-1 quiet", timeout=BOOT_TIMEOUT)
    (work / "console.txt").write_text(console)  # kept for a look after a failure

    assert "TP-MARKER pid 1" in console, console[-6000:]
    uptime = between(console, "TP-UPTIME\n", "TP-END\n")
    configured = float(uptime[0].split()[0])
    print(
        f"\n{len(closure)} packages: initrd build {built:.1f}s ({size / 2**20:.0f} MiB), "
        f"boot to power-off {booted:.1f}s, boot to configured {configured:.1f}s (TCG)"
    )
    assert between(console, "TP-AUDIT\n", "TP-STATUS\n") == []
    status = between(console, "TP-STATUS\n", "TP-PACKAGES\n")
    assert [line.split(None, 1) for line in status] == [
        [str(len(closure)), "install ok installed"]
    ], status
    assert between(console, "TP-PACKAGES\n", "TP-PASSWD\n") == closure
    assert between(console, "TP-PASSWD\n", "TP-FIRSTBOOT-LOG\n") == ["passwd-ok"]
    log = "\n".join(between(console, "TP-FIRSTBOOT-LOG\n", "TP-UPTIME\n"))
    started = re.findall(r"^== step (\d+): \S+ \S+ \S+ \(", log, re.M)
    ended = re.findall(r"^== step (\d+): status (\d+)", log, re.M)
    assert started and ended == [(step, "0") for step in started], log
    preinsts = re.findall(r"^== step \d+: (\S+) \S+ preinst \(", log, re.M)
    assert preinsts and set(preinsts) <= set(closure), log
    assert re.search(
        r"^== step \d+: dpkg \S+ configure \(/usr/bin/dpkg --configure -a\)", log, re.M
    )
    assert re.search(rf"^== finished: {len(started)} scripts run, 0 failed", log, re.M), log
