"""`-f initrd` boots under qemu and runs the deferred package scripts at first boot.

The kernel is Debian 12's own, from the real linux-image-amd64 package. Appliances
are built as uid 65534 without network; qemu runs under TCG (never KVM: a nested
/dev/kvm may hang) with a hard timeout, and the serial console is the evidence.
The first-boot runner itself is also run directly, under each POSIX shell an
appliance may have, and inside a supermin-built chroot.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import pytest
from support.debdata import build_deb, kernel_files, real_pool
from support.product import scratch_dir, supermin_nobody
from support.qemu import between, boot, tarball

from supermin.bootfiles import appliance_shell, render_init, script_text
from supermin.build import initrd_is_directory
from supermin.entry import EntryKind, FileEntry
from supermin.errors import KernelError
from supermin.kernel import KernelSearch, find_kernel, image_version
from supermin.merge import Layer

BOOT_TIMEOUT = 120
ROOTS = ["bash", "coreutils", "busybox-static"]  # busybox: mount for /init, sysrq needs /proc


# ------------------------------------------------------------------ helpers


def _boot(directory: Path) -> tuple[str, float]:
    """Boot DIR/kernel + DIR/initrd; the serial console's text and the seconds it took."""
    return boot(directory, "console=ttyS0 panic=-1 quiet", timeout=BOOT_TIMEOUT)


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("supermin: warning:")]
    assert len(lines) == 1 and lines[0].startswith("supermin: error: "), stderr
    return lines[0]


def _tiny_appliance(label: str) -> tuple[Path, Path]:
    """A one-package appliance (no shell, no kernel): for kernel discovery and layout."""
    work = scratch_dir(label)
    pool = work / "pool"
    build_deb(pool, "tp-tiny", "1.0", files={"/usr/share/tp-tiny/README": b"tiny\n"})
    supermin_nobody(["prepare", "tp-tiny", "--repo", str(pool), "-o", str(work / "d")])
    return work, pool


def _build(
    work: Path, pool: Path, out: str, *extra: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`supermin build -f initrd -o WORK/OUT` of WORK/d as uid 65534; not checked."""
    return supermin_nobody(
        ["build", str(work / "d"), "--repo", str(pool), "-f", "initrd", "-o", str(work / out)]
        + list(extra),
        check=False,
        env=env,
    )


# ------------------------------------------------------------------ the boot

POSTINST = """#!/bin/sh
set -e
mkdir -p /var/lib/tp
proc=no; [ -r /proc/self/stat ] && proc=yes
dev=no; [ -c /dev/null ] && dev=yes
log=/var/lib/tp/boot.log
echo "tp-boot postinst [$*] proc=$proc dev=$dev pkg=$DPKG_MAINTSCRIPT_PACKAGE" >> $log
"""
PREINST = "#!/bin/sh\necho 'tp-boot preinst fails on purpose'\nexit 7\n"
TEST_INIT = b"""#!/bin/sh
echo "TP-MARKER pid $$"
echo TP-BOOT-LOG
cat /var/lib/tp/boot.log
echo TP-FIRSTBOOT-LOG
cat /var/log/supermin-firstboot.log
echo TP-END
echo o > /proc/sysrq-trigger
sleep 60
"""


@pytest.fixture(scope="module")
def booted() -> tuple[Path, str]:
    """bash + coreutils + a package with scripts, built as 65534, booted once."""
    work = scratch_dir("boot-initrd")
    pool = work / "pool"
    build_deb(pool, "tp-boot", "1.0", scripts={"preinst": PREINST, "postinst": POSTINST})
    real = real_pool(ROOTS)
    repos = ["--repo", str(real), "--repo", str(pool)]
    supermin_nobody(["prepare", *ROOTS, "tp-boot", *repos, "-o", str(work / "d")])
    # Debian's /bin/sh comes from dash (Essential, so no package depends on it): a
    # user's tarball supplies it here, beside the test's init.
    (work / "d" / "overlay.tar").write_bytes(tarball({"bin/sh": "bash", "tp/init": TEST_INIT}))
    appliance = work / "appliance.d"
    start = time.monotonic()
    supermin_nobody(
        ["build", str(work / "d"), *repos, "-f", "initrd", "--init", "/tp/init"]
        + ["--kernel", str(kernel_files() / "vmlinuz"), "-o", str(appliance)]
    )
    built = time.monotonic() - start
    console, elapsed = _boot(appliance)
    (work / "console.txt").write_text(console)  # kept for a look after a failure
    print(f"\ninitrd build {built:.1f}s, boot to power-off {elapsed:.1f}s (TCG)")
    return appliance, console


def test_appliance_directory_holds_the_kernel_and_the_initrd(booted: tuple[Path, str]) -> None:
    appliance, _ = booted
    assert sorted(p.name for p in appliance.iterdir()) == ["initrd", "kernel"]
    assert filecmp.cmp(appliance / "kernel", kernel_files() / "vmlinuz", shallow=False)
    with (appliance / "initrd").open("rb") as initrd:
        assert initrd.read(4) == b"\x28\xb5\x2f\xfd"  # zstd, the default
    # The kernel can unpack it: Debian 12 builds zstd initramfs support in.
    assert "CONFIG_RD_ZSTD=y" in (kernel_files() / "config").read_text().splitlines()


def test_init_runs_first_boot_then_execs_the_appliance_init(booted: tuple[Path, str]) -> None:
    _, console = booted
    assert "TP-MARKER pid 1" in console  # exec'ed, not a child of /init
    # The failing preinst is reported, and booting goes on.
    assert "supermin-firstboot: step" in console and "failed with status 7" in console
    assert "supermin-init: package scripts failed at first boot" in console


def test_postinst_ran_exactly_once_with_kernel_filesystems(booted: tuple[Path, str]) -> None:
    _, console = booted
    lines = between(console, "TP-BOOT-LOG\n", "TP-FIRSTBOOT-LOG\n")
    assert lines == ["tp-boot postinst [configure ] proc=yes dev=yes pkg=tp-boot"]


def test_firstboot_log_lists_each_step_with_its_status(booted: tuple[Path, str]) -> None:
    _, console = booted
    log = "\n".join(between(console, "TP-FIRSTBOOT-LOG\n", "TP-END\n"))
    post = re.search(
        r"^== step (\d+): tp-boot 1\.0 postinst "
        r"\(/bin/sh scripts/\d+-tp-boot\.postinst configure ''\) at [\d.]+s$",
        log,
        re.M,
    )
    pre = re.search(r"^== step (\d+): tp-boot 1\.0 preinst ", log, re.M)
    assert post and pre, log
    assert f"== step {post[1]}: status 0" in log
    assert f"== step {pre[1]}: status 7 (failed)\n" in log
    assert "tp-boot preinst fails on purpose" in log
    assert int(pre[1]) < int(post[1])  # every preinst before any postinst
    started = re.findall(r"^== step (\d+): \S+ \S+ \S+ \(", log, re.M)
    ended = re.findall(r"^== step (\d+): status \d+", log, re.M)
    assert started == ended == sorted(started, key=int)  # every step, in manifest order
    assert re.search(r"^== finished: \d+ scripts run, \d+ failed .*, 0 skipped", log, re.M)


# ------------------------------------------------------------------ where the kernel comes from


def test_kernel_comes_from_the_kernel_package_in_the_set() -> None:
    # The real package with its real dependencies (initramfs-tools, kmod, udev...):
    # nothing on the host is used, so a container without /boot still gets a kernel.
    roots = ["bash", "coreutils", "linux-image-amd64"]
    pool = real_pool(roots)
    work = scratch_dir("kernel-package")
    empty_host = work / "host"
    empty_host.mkdir()
    supermin_nobody(["prepare", *roots, "--repo", str(pool), "-o", str(work / "d")])
    result = _build(
        work, pool, "appliance", "--compress", "none", "--sysroot", str(empty_host), "-v"
    )
    try:
        assert result.returncode == 0, result.stderr
        assert "of package linux-image-6.1.0-" in result.stderr
        assert filecmp.cmp(work / "appliance/kernel", kernel_files() / "vmlinuz", shallow=False)
    finally:
        shutil.rmtree(work / "appliance", ignore_errors=True)  # 480 MB of modules


def test_supermin_kernel_comes_first_then_the_kernel_option() -> None:
    work, pool = _tiny_appliance("kernel-env")
    env_kernel = work / "env-vmlinuz"
    env_kernel.write_bytes(b"kernel from the environment\n")
    option_kernel = work / "option-vmlinuz"
    option_kernel.write_bytes(b"kernel from --kernel\n")
    env = {"SUPERMIN_KERNEL": str(env_kernel), "SUPERMIN_KERNEL_VERSION": "6.1.0-tp"}
    result = _build(work, pool, "a", "--kernel", str(option_kernel), "-v", env=env)
    assert result.returncode == 0, result.stderr
    assert "kernel 6.1.0-tp: SUPERMIN_KERNEL" in result.stderr
    assert (work / "a/kernel").read_bytes() == env_kernel.read_bytes()
    result = _build(work, pool, "b/", "--kernel", str(option_kernel))
    assert result.returncode == 0, result.stderr
    assert (work / "b/kernel").read_bytes() == option_kernel.read_bytes()
    assert (work / "b/initrd").is_file()


def test_no_kernel_anywhere_is_one_line_naming_every_place() -> None:
    work, pool = _tiny_appliance("no-kernel")
    host = work / "host"
    (host / "boot").mkdir(parents=True)
    (host / "lib/modules/6.1.0-1-amd64").mkdir(parents=True)  # modules, but no vmlinuz
    result = _build(work, pool, "appliance.d", "--sysroot", str(host))
    assert result.returncode == 1
    line = _error_line(result.stderr)
    for place in (
        "$SUPERMIN_KERNEL (not set)",
        "--kernel (not given)",
        "kernel package",
        f"{host}/lib/modules/*/vmlinuz",
        f"{host}/boot/vmlinu?-*",
        "linux-image-amd64",
    ):
        assert place in line, line
    assert not (work / "appliance.d").exists()
    assert sorted(p.name for p in work.iterdir()) == ["d", "host", "pool"]  # no scratch left


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a root-owned 0600 kernel, as on Ubuntu")
def test_unreadable_host_kernel_is_a_clear_error() -> None:
    work, pool = _tiny_appliance("kernel-0600")
    host = work / "host"
    (host / "boot").mkdir(parents=True)
    kernel = host / "boot/vmlinuz-6.1.0-99-amd64"
    kernel.write_bytes(b"not for you\n")
    kernel.chmod(0o600)
    result = _build(work, pool, "appliance.d", "--sysroot", str(host))
    assert result.returncode == 1
    line = _error_line(result.stderr)
    assert f"only unreadable ones: {kernel} (mode 0600, owner uid 0)" in line, line
    assert f"chmod 0644 {kernel}" in line and "SUPERMIN_KERNEL" in line, line


def test_a_cpio_file_needs_no_kernel_and_gets_our_init() -> None:
    work, pool = _tiny_appliance("cpio-only")
    empty = work / "host"
    empty.mkdir()
    result = _build(work, pool, "x.cpio", "--compress", "none", "--sysroot", str(empty))
    assert result.returncode == 0, result.stderr
    assert "no shell" in result.stderr  # tp-tiny has none: /init could not run
    names = subprocess.run(
        ["cpio", "-it", "--quiet"],
        stdin=(work / "x.cpio").open("rb"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in ("init", "usr/lib/supermin/firstboot/run", "proc", "sys", "dev/console"):
        assert name in names


def test_an_init_the_appliance_brings_wins_over_ours() -> None:
    work, pool = _tiny_appliance("own-init")
    theirs = b"#!/bin/sh\necho their init\n"
    (work / "d" / "init.tar").write_bytes(tarball({"init": theirs}))
    result = _build(work, pool, "x.img", "--compress", "none")
    assert result.returncode == 0, result.stderr
    init = subprocess.run(
        ["cpio", "-i", "--quiet", "--to-stdout", "init"],
        stdin=(work / "x.img").open("rb"),
        capture_output=True,
        check=True,
    ).stdout
    assert init == theirs


# ------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("output", "directory"),
    [
        ("appliance", True),
        ("appliance.d", True),
        ("out/", True),
        ("initrd.img", False),
        ("x.cpio", False),
        ("x.cpio.zst", False),
        ("initramfs.gz", False),
    ],
)
def test_initrd_output_name_decides_the_layout(output: str, directory: bool) -> None:
    assert initrd_is_directory(output) is directory


def test_initrd_output_existing_directory_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "old.img").mkdir()
    assert initrd_is_directory(str(tmp_path / "old.img"))


def _entry(path: str, kind: EntryKind = EntryKind.FILE, content: Path | None = None) -> FileEntry:
    return FileEntry(PurePosixPath(path), kind, 0o755, content=content, origin="tp")


def test_init_is_written_for_the_shell_the_appliance_has() -> None:
    bash_only = [Layer([_entry("/bin/bash"), _entry("/bin", EntryKind.DIR)])]
    assert appliance_shell(bash_only) == "/bin/bash"
    both = [*bash_only, Layer([_entry("/bin/sh", EntryKind.SYMLINK)])]
    assert appliance_shell(both) == "/bin/sh"
    assert appliance_shell([Layer([_entry("/bin/busybox")])]) == "/bin/busybox sh"
    assert appliance_shell([Layer([_entry("/usr/bin/busybox")])]) == "/usr/bin/busybox sh"
    assert appliance_shell([Layer([_entry("/etc/hostname")])]) is None
    text = render_init("/bin/busybox sh", PurePosixPath("/sbin/my init"))
    assert text.startswith("#!/bin/busybox sh\n")
    assert "\nshell='/bin/busybox sh'\n" in text and "\ninit='/sbin/my init'\n" in text
    assert "@SHELL@" not in text and "@INIT@" not in text
    for shell in ("dash", "bash"):
        subprocess.run([shell, "-n"], input=text.encode(), check=True)


def _host(tmp_path: Path, *kernels: str, mode: int = 0o644) -> Path:
    for name in kernels:
        path = tmp_path / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        path.chmod(mode)
    return tmp_path


def test_host_kernels_newest_first_for_the_target_architecture(tmp_path: Path) -> None:
    host = _host(
        tmp_path,
        "/boot/vmlinuz-6.9.12-amd64",
        "/boot/vmlinuz-6.10.1-amd64",
        "/boot/vmlinuz-6.11.0-arm64",
        "/boot/vmlinuz-0-rescue-0123",
        "/lib/modules/6.10.1-amd64/kernel/x.ko",
    )
    kernel = find_kernel(KernelSearch({}, None, host, "x86_64"), [])
    assert kernel.version == "6.10.1-amd64"
    assert kernel.image == host / "boot/vmlinuz-6.10.1-amd64"
    assert kernel.modules == host / "lib/modules/6.10.1-amd64"
    assert find_kernel(KernelSearch({}, None, host, "aarch64"), []).version == "6.11.0-arm64"
    with pytest.raises(KernelError, match=r"none for riscv64, only .*vmlinuz-6\.11\.0-arm64"):
        find_kernel(KernelSearch({}, None, host, "riscv64"), [])


def test_kernel_in_lib_modules_counts_like_fedora_ships_it(tmp_path: Path) -> None:
    host = _host(tmp_path, "/lib/modules/6.5.6-300.fc39.x86_64/vmlinuz")
    kernel = find_kernel(KernelSearch({}, None, host, "x86_64"), [])
    assert kernel.version == "6.5.6-300.fc39.x86_64"
    assert kernel.modules == host / "lib/modules/6.5.6-300.fc39.x86_64"


def test_a_kernel_among_the_entries_beats_the_host(tmp_path: Path) -> None:
    host = _host(tmp_path / "host", "/boot/vmlinuz-9.9.9-amd64")
    blob = tmp_path / "blob"
    blob.write_bytes(b"packaged")
    entries = [
        _entry("/boot/vmlinuz-6.1.0-50-amd64", content=blob),
        _entry("/lib/modules/6.1.0-50-amd64", EntryKind.DIR),
    ]
    kernel = find_kernel(KernelSearch({}, None, host, "x86_64"), entries)
    assert kernel.image == blob and kernel.version == "6.1.0-50-amd64"
    assert kernel.modules_in_image == PurePosixPath("/lib/modules/6.1.0-50-amd64")


def test_explicit_kernel_that_cannot_be_read_does_not_fall_through(tmp_path: Path) -> None:
    host = _host(tmp_path, "/boot/vmlinuz-6.1.0-1-amd64")
    search = KernelSearch({"SUPERMIN_KERNEL": str(tmp_path / "missing")}, None, host)
    with pytest.raises(KernelError, match="SUPERMIN_KERNEL is .*missing, which is not a file"):
        find_kernel(search, [])


def test_release_is_read_from_the_bzimage_header() -> None:
    vmlinuz = kernel_files() / "vmlinuz"
    assert image_version(vmlinuz) is not None
    assert re.fullmatch(r"6\.1\.0-\d+-amd64", image_version(vmlinuz) or "")
    search = KernelSearch({}, vmlinuz, Path("/nonexistent"))
    assert find_kernel(search, []).version == image_version(vmlinuz)


# ------------------------------------------------------------------ the runner itself

SHELLS = [["dash"], ["bash", "--posix"], ["busybox", "sh"]]
HEADER = "# step\tpackage\tversion\tphase\tinterpreter\targuments\tscript\n"


def _firstboot(tmp_path: Path, steps: list[tuple[str, str, str, str, str]]) -> Path:
    """A firstboot directory: steps are (package, phase, interpreter, arguments, body)."""
    directory = tmp_path / "firstboot"
    (directory / "scripts").mkdir(parents=True)
    lines = [HEADER]
    for number, (package, phase, interpreter, arguments, body) in enumerate(steps, 1):
        name = f"scripts/{number:04d}-{package}.{phase}"
        (directory / name).write_text(body)
        (directory / name).chmod(0o755)
        lines.append(f"{number}\t{package}\t1.0\t{phase}\t{interpreter}\t{arguments}\t{name}\n")
    (directory / "manifest").write_text("".join(lines))
    return directory


def _run_runner(
    shell: list[str], tmp_path: Path, directory: Path
) -> subprocess.CompletedProcess[str]:
    runner = tmp_path / "run"
    runner.write_text(script_text("firstboot.sh"))
    env = {
        "PATH": os.environ["PATH"],
        "SUPERMIN_FIRSTBOOT_DIR": str(directory),
        "SUPERMIN_FIRSTBOOT_LOG": str(tmp_path / "log/firstboot.log"),
        "SUPERMIN_FIRSTBOOT_STATE": str(tmp_path / "state"),
    }
    return subprocess.run(
        [*shell, str(runner)], env=env, capture_output=True, text=True, check=False, timeout=60
    )


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_runner_runs_in_order_past_failures_and_only_once(shell: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    record = '#!/bin/sh\necho "{tag} [$*] $DPKG_MAINTSCRIPT_PACKAGE $DPKG_MAINTSCRIPT_NAME"'
    record += f" >> {out}\n"
    directory = _firstboot(
        tmp_path,
        [
            ("b", "preinst", "/bin/sh", "install", record.format(tag="one")),
            ("a", "preinst", "/bin/sh -e", "install", "#!/bin/sh -e\necho broken\nfalse\n"),
            ("a", "post", "<lua>", "1", 'print("lua")\n'),
            ("c", "post", "/bin/echo", "", ""),  # rpm's `-p /bin/echo`: no body, no arguments
            ("b", "postinst", "/bin/sh", "configure ''", record.format(tag="two")),
            ("a", "postinst", "/bin/sh", "configure 'it'\\''s'", record.format(tag="three")),
        ],
    )
    first = _run_runner(shell, tmp_path, directory)
    assert first.returncode == 1, first
    assert "step 2, a preinst, failed with status 1" in first.stdout
    assert out.read_text().splitlines() == [
        "one [install] b preinst",
        "two [configure ] b postinst",
        "three [configure it's] a postinst",
    ]
    log = (tmp_path / "log/firstboot.log").read_text()
    assert "== step 2: status 1 (failed)\n" in log and "broken\n" in log
    assert "== step 3: a 1.0 post: skipped: needs rpm's Lua\n" in log
    assert re.search(r"^== step 4: c 1\.0 post \(/bin/echo\)( at [\d.]+s)?$", log, re.M), log
    assert "== step 6: status 0\n" in log
    assert "== finished: 5 scripts run, 1 failed (step 2), 1 skipped" in log
    assert (tmp_path / "state/firstboot.done").is_file()
    assert not (tmp_path / "state/firstboot.progress").exists()
    second = _run_runner(shell, tmp_path, directory)
    assert second.returncode == 0 and second.stdout == "", second
    assert len(out.read_text().splitlines()) == 3
    assert (tmp_path / "log/firstboot.log").read_text() == log


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_runner_resumes_after_the_last_finished_step(shell: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    directory = _firstboot(
        tmp_path,
        [(name, "postinst", "/bin/sh", "configure", f"echo {name} >> {out}\n") for name in "abc"],
    )
    (tmp_path / "state").mkdir()
    (tmp_path / "state/firstboot.progress").write_text("1\n2\n")  # power lost during step 3
    result = _run_runner(shell, tmp_path, directory)
    assert result.returncode == 0, result
    assert out.read_text() == "c\n"
    assert "== resuming after step 2" in (tmp_path / "log/firstboot.log").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_runner_in_a_built_chroot_with_its_default_paths() -> None:
    """Dependency order from a real build; the runner at its place, run by busybox sh."""
    work = scratch_dir("runner-chroot")
    pool = work / "pool"
    log_line = 'echo "$DPKG_MAINTSCRIPT_PACKAGE $DPKG_MAINTSCRIPT_NAME $*" >> /order.log\n'
    for name, depends in (("tp-top", "tp-mid"), ("tp-mid", "tp-base"), ("tp-base", "")):
        body = "#!/bin/sh\n" + log_line + ("exit 4\n" if name == "tp-mid" else "")
        build_deb(
            pool,
            name,
            "1.0",
            depends=depends,
            scripts={"preinst": "#!/bin/sh\n" + log_line, "postinst": body},
        )
    real = real_pool(["busybox-static"])
    repos = ["--repo", str(real), "--repo", str(pool)]
    supermin_nobody(["prepare", "tp-top", "busybox-static", *repos, "-o", str(work / "d")])
    applets = {f"bin/{name}": "busybox" for name in ("sh", "mkdir", "rm", "cat")}
    (work / "d" / "sh.tar").write_bytes(tarball(applets))
    supermin_nobody(["build", str(work / "d"), *repos, "-f", "chroot", "-o", str(work / "c")])
    root = work / "c"

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                shutil.which("chroot") or "chroot",
                str(root),
                "/bin/sh",
                "/usr/lib/supermin/firstboot/run",
            ],
            env={"PATH": "/bin"},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    refused = run()  # supermin's chroot has no device nodes: the runner wants /dev
    assert refused.returncode == 1 and "no /dev/null" in refused.stdout, refused
    assert not (root / "order.log").exists()
    (root / "dev").mkdir(exist_ok=True)
    os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    first = run()
    assert first.returncode == 1 and "tp-mid postinst, failed with status 4" in first.stdout
    assert (root / "order.log").read_text().splitlines() == [
        "tp-base preinst install",
        "tp-mid preinst install",
        "tp-top preinst install",
        "tp-base postinst configure ",
        "tp-mid postinst configure ",
        "tp-top postinst configure ",
    ]
    assert "6 scripts run, 1 failed" in (root / "var/lib/supermin/firstboot.done").read_text()
    assert "== step 5: status 4 (failed)" in (root / "var/log/supermin-firstboot.log").read_text()
    second = run()
    assert second.returncode == 0 and second.stdout == ""
    assert len((root / "order.log").read_text().splitlines()) == 6
