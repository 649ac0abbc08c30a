"""`-f ext2` writes supermin's DIR/kernel, DIR/initrd, DIR/root, and the root boots, twice.

The kernel and its modules are Debian 12's own, from the real linux-image .deb
(extracted into the test cache and handed over with $SUPERMIN_KERNEL and
$SUPERMIN_MODULES; the package ships no modules.dep). Appliances are built as
uid 65534 without network; qemu runs under TCG (never KVM) with a hard timeout,
and the serial console is the evidence.
"""

from __future__ import annotations

import filecmp
import lzma
import re
import shutil
import subprocess
import time
from pathlib import Path, PurePosixPath

import pytest
from support.debdata import build_deb, kernel_files, kernel_modules, real_pool
from support.product import scratch_dir, supermin_nobody
from support.qemu import between, boot, filesystem_uuid, tarball

from supermin.elf import elf_section, is_static_executable
from supermin.entry import EntryKind, FileEntry
from supermin.hostfiles.hostfs import HostFiles
from supermin.kernel import Kernel
from supermin.merge import Layer, merge, merge_subtree
from supermin.miniinitrd import (
    WANTED_MODULES,
    ModuleTree,
    load_order,
    modinfo,
    module_dependencies,
    module_tree,
    soft_predecessors,
)

BOOT_TIMEOUT = 150
ROOTS = ["bash", "coreutils", "busybox-static"]

POSTINST = """#!/bin/sh
set -e
mkdir -p /var/lib/tp
proc=no; [ -r /proc/self/stat ] && proc=yes
dev=no; [ -c /dev/null ] && dev=yes
echo "tp-ext2 postinst [$*] proc=$proc dev=$dev" >> /var/lib/tp/boot.log
"""
TEST_INIT = b"""#!/bin/sh
while read -r dev mnt type opts rest; do
    [ "$mnt" = / ] && echo "TP-MARKER pid $$ root $dev $type ${opts%%,*}"
done < /proc/mounts
echo TP-BOOT-LOG
cat /var/lib/tp/boot.log
echo TP-FIRSTBOOT-LOG
cat /var/log/supermin-firstboot.log
echo TP-END
sync
echo o > /proc/sysrq-trigger
sleep 60
"""


def _boot(directory: Path, root: str, extra: str = "") -> tuple[str, float]:
    """Boot DIR's kernel + initrd with DIR/root as a virtio disk; (console text, seconds)."""
    append = f"console=ttyS0 root={root} panic=-1 quiet {extra}".strip()
    drive = f"file={directory / 'root'},if=virtio,format=raw"
    return boot(directory, append, drives=[drive], timeout=BOOT_TIMEOUT)


def _kernel_env() -> dict[str, str]:
    return {
        "SUPERMIN_KERNEL": str(kernel_files() / "vmlinuz"),
        "SUPERMIN_MODULES": str(kernel_modules()),
    }


@pytest.fixture(scope="module")
def appliance() -> Path:
    """bash + coreutils + busybox-static + a package with a postinst, -f ext2, as 65534."""
    work = scratch_dir("boot-ext2")
    pool = work / "pool"
    build_deb(pool, "tp-ext2", "1.0", scripts={"postinst": POSTINST})
    real = real_pool(ROOTS)
    repos = ["--repo", str(real), "--repo", str(pool)]
    supermin_nobody(["prepare", *ROOTS, "tp-ext2", *repos, "-o", str(work / "d")])
    # Debian's /bin/sh comes from dash (Essential): the tarball supplies one, and the init.
    (work / "d" / "overlay.tar").write_bytes(tarball({"bin/sh": "bash", "tp/init": TEST_INIT}))
    out = work / "appliance"
    start = time.monotonic()
    result = supermin_nobody(
        ["build", str(work / "d"), *repos, "-f", "ext2", "--size", "512M", "--init", "/tp/init"]
        + ["-v", "-o", str(out)],
        env=_kernel_env(),
    )
    print(f"\next2 build {time.monotonic() - start:.1f}s")
    assert "initrd: busybox /bin/busybox of package busybox-static" in result.stderr
    # The kernel's ~400 MB of modules went in while the packages were read (early.py).
    assert ", walked and copied while the packages were read" in result.stderr
    return out


@pytest.fixture(scope="module")
def boots(appliance: Path) -> list[str]:
    """The same writable root booted twice: by UUID, then as /dev/vda."""
    consoles = []
    for root in (f"UUID={filesystem_uuid(appliance / 'root')}", "/dev/vda"):
        console, elapsed = _boot(appliance, root)
        print(f"ext2 boot (root={root}) to power-off {elapsed:.1f}s (TCG)")
        consoles.append(console)
    (appliance.parent / "console-1.txt").write_text(consoles[0])
    (appliance.parent / "console-2.txt").write_text(consoles[1])
    return consoles


def test_directory_is_supermins_layout(appliance: Path) -> None:
    assert sorted(p.name for p in appliance.iterdir()) == ["initrd", "kernel", "root"]
    assert filecmp.cmp(appliance / "kernel", kernel_files() / "vmlinuz", shallow=False)
    assert (appliance / "root").stat().st_size == 512 << 20
    subprocess.run(["e2fsck", "-fn", str(appliance / "root")], check=True, capture_output=True)
    # The kernel's modules, walked and copied early, are at /lib/modules/VERSION
    # (a directory here: no usrmerge), whatever the build machine's /lib is.
    ext4 = next(kernel_modules().glob("kernel/fs/ext4/ext4.ko*"))
    inside = f"/lib/modules/{kernel_modules().name}/{ext4.relative_to(kernel_modules())}"
    dumped = appliance.parent / "ext4.ko.dumped"
    subprocess.run(
        ["debugfs", "-R", f"dump {inside} {dumped}", str(appliance / "root")],
        check=True,
        capture_output=True,
    )
    assert filecmp.cmp(dumped, ext4, shallow=False)
    # An uncompressed newc cpio, as supermin 5 writes it (no --compress given).
    assert (appliance / "initrd").read_bytes()[:6] == b"070701"
    names = subprocess.run(
        ["bsdtar", "-tf", str(appliance / "initrd")], capture_output=True, text=True, check=True
    ).stdout.split()
    for name in ("init", "bin/busybox", "lib/modules/load", "dev/console"):
        assert name in names or f"./{name}" in names, names
    # Only what reaches the disk: a few dozen modules, not the kernel's thousands.
    modules = [n for n in names if n.endswith(".ko")]
    assert 5 <= len(modules) <= 40, modules


def test_root_init_runs_first_boot_then_the_appliance_init(boots: list[str]) -> None:
    first, _ = boots
    assert "supermin-mini-initrd: mounted /dev/vda (UUID=" in first
    assert re.search(r"TP-MARKER pid 1 root /dev/vda ext2 rw\b", first), first[-4000:]
    lines = between(first, "TP-BOOT-LOG\n", "TP-FIRSTBOOT-LOG\n")
    assert lines == ["tp-ext2 postinst [configure ] proc=yes dev=yes"]
    log = "\n".join(between(first, "TP-FIRSTBOOT-LOG\n", "TP-END\n"))
    assert re.search(r"^== step \d+: tp-ext2 1\.0 postinst .*\n== step \d+: status 0$", log, re.M)
    assert len(re.findall(r"^== finished: ", log, re.M)) == 1


def test_second_boot_of_the_same_root_reruns_nothing(boots: list[str]) -> None:
    first, second = boots
    assert "supermin-mini-initrd: mounted /dev/vda (/dev/vda)" in second
    assert "TP-MARKER pid 1 root /dev/vda" in second
    assert between(second, "TP-BOOT-LOG\n", "TP-FIRSTBOOT-LOG\n") == [
        "tp-ext2 postinst [configure ] proc=yes dev=yes"
    ]
    # The log is the first boot's, untouched: the runner saw its mark and did nothing.
    log = between(second, "TP-FIRSTBOOT-LOG\n", "TP-END\n")
    assert log == between(first, "TP-FIRSTBOOT-LOG\n", "TP-END\n")
    assert "supermin-firstboot:" in first and "supermin-firstboot:" not in second


def test_missing_root_device_is_waited_for_then_given_up(appliance: Path) -> None:
    missing = "UUID=00000000-0000-4000-8000-000000000000"
    console, elapsed = _boot(appliance, missing, "rootdelay=3")
    waits = re.findall(
        rf"supermin-mini-initrd: waiting for root device {missing} \((\d+) ms", console
    )
    assert len(waits) >= 2, console[-3000:]
    assert [int(w) for w in waits] == sorted(int(w) for w in waits)
    assert f"gave up waiting for root device {missing} after 3s" in console
    assert "TP-MARKER" not in console
    print(f"ext2 boot without its root: gave up and halted in {elapsed:.1f}s (TCG)")


# ------------------------------------------------------------------ units


def test_modinfo_dependencies_from_the_real_modules() -> None:
    tree = ModuleTree.from_directory(kernel_modules())
    assert "ext4" in tree.files and "virtio_blk" in tree.files
    assert "crc32c_generic" in tree.files and "unix" in tree.builtin  # modules.builtin read
    ext4 = modinfo(tree.files["ext4"][1].read())
    assert ext4["license"] == ["GPL"]
    assert {"mbcache", "jbd2", "crc16"} <= set(module_dependencies(ext4))
    assert soft_predecessors(ext4) == ["crypto_crc32c"]  # an alias: crc32c_generic is wanted
    blk = modinfo(tree.files["virtio_blk"][1].read())
    assert {"virtio", "virtio_ring"} <= set(module_dependencies(blk))


@pytest.mark.parametrize("at", ["/lib/modules", "/usr/lib/modules"])
def test_module_tree_from_the_spliced_entries_is_the_directorys(
    at: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ext2 root holds the modules already: the initrd finds them among its entries."""
    modules = kernel_modules()
    kernel = Kernel(kernel_files() / "vmlinuz", modules.name, "test", modules=modules)
    place = PurePosixPath(at) / modules.name
    root = [FileEntry(PurePosixPath("/"), EntryKind.DIR, 0o755)]
    if at.startswith("/usr"):  # merged /usr: /lib leads to usr/lib
        root.append(FileEntry(PurePosixPath("/lib"), EntryKind.SYMLINK, 0o777, target="usr/lib"))
    entries = merge_subtree(merge([Layer(root)]), HostFiles().tree(modules, place, "k"), place)
    walked = ModuleTree.from_directory(modules)
    with monkeypatch.context() as patched:  # not walked again
        patched.setattr(ModuleTree, "from_directory", None)
        spliced = module_tree(kernel, entries, Path("/nonexistent"))
    assert spliced is not None and len(spliced.files) > 3000
    assert {n: (f, c.path) for n, (f, c) in spliced.files.items()} == {
        n: (f, c.path) for n, (f, c) in walked.files.items()
    }
    assert spliced.builtin == walked.builtin and spliced.where == walked.where
    # Without them among the entries, the directory is walked.
    alone = module_tree(kernel, merge([Layer(root)]), Path("/nonexistent"))
    assert alone is not None and alone.files.keys() == walked.files.keys()


def test_load_order_puts_dependencies_first() -> None:
    tree = ModuleTree.from_directory(kernel_modules())
    order = load_order(tree, WANTED_MODULES)
    names = [m.name for m in order]
    assert len(names) == len(set(names))
    for wanted in ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ata_piix", "ext4"):
        assert wanted in names
    for module in order:
        for dependency in module_dependencies(modinfo(module.data)):
            if dependency in tree.files:
                assert names.index(dependency) < names.index(module.name), (dependency, module)
    assert names.index("jbd2") < names.index("ext4")
    assert names.index("virtio") < names.index("virtio_pci")
    assert names.index("virtio_ring") < names.index("virtio_blk")


def test_compressed_modules_are_decompressed(tmp_path: Path) -> None:
    real = ModuleTree.from_directory(kernel_modules())
    for name in ("virtio_blk", "virtio_ring", "virtio"):
        _, content = real.files[name]
        (tmp_path / f"{name.replace('_', '-')}.ko.xz").write_bytes(lzma.compress(content.read()))
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    tree = ModuleTree.from_directory(tmp_path)
    order = load_order(tree, ["virtio_pci", "virtio_blk"])
    assert [m.name for m in order] == ["virtio", "virtio_ring", "virtio_blk"]
    assert order[2].data == real.files["virtio_blk"][1].read()
    assert modinfo(order[0].data)["license"] == ["GPL"]


def test_elf_reader_tells_static_busybox_from_bash(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    assert busybox is not None
    assert is_static_executable(Path(busybox).read_bytes())
    assert not is_static_executable(Path("/bin/bash").read_bytes())
    assert elf_section(b"#!/bin/sh\n" * 10, ".modinfo") is None
    assert modinfo(Path("/bin/bash").read_bytes()) == {}


def test_a_dynamic_busybox_boots_with_its_libraries() -> None:
    """No static busybox anywhere (a stock Debian host has the dynamic `busybox`): the
    initrd gets the appliance's dynamic one with its loader and libraries, and boots."""
    work = scratch_dir("boot-ext2-dynamic")
    roots = ["bash", "coreutils", "busybox"]
    repos = ["--repo", str(real_pool(roots))]
    supermin_nobody(["prepare", *roots, *repos, "-o", str(work / "d")])
    (work / "d" / "overlay.tar").write_bytes(tarball({"bin/sh": "bash", "tp/init": DYNAMIC_INIT}))
    empty = work / "empty-host"  # --sysroot: the host's busybox-static is not found
    empty.mkdir()
    out = work / "appliance"
    result = supermin_nobody(
        ["build", str(work / "d"), *repos, "--sysroot", str(empty), "-f", "ext2"]
        + ["--size", "512M", "--init", "/tp/init", "-v", "-o", str(out)],
        env=_kernel_env(),
    )
    assert re.search(
        r"initrd: busybox /\S+ of package busybox \(dynamic\), [1-9]\d* lib", result.stderr
    )
    names = subprocess.run(
        ["bsdtar", "-tf", str(out / "initrd")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert any(n.endswith("lib64/ld-linux-x86-64.so.2") for n in names), names
    assert any(n.endswith("/libc.so.6") for n in names), names
    console, elapsed = _boot(out, "/dev/vda")
    print(f"ext2 boot with a dynamic busybox: {elapsed:.1f}s (TCG)")
    assert "supermin-mini-initrd: mounted /dev/vda" in console, console[-4000:]
    assert "TP-DYNAMIC-MARKER" in console, console[-4000:]


DYNAMIC_INIT = b"""#!/bin/sh
echo TP-DYNAMIC-MARKER
sync
echo o > /proc/sysrq-trigger
sleep 60
"""
