"""The small initrd of the ext2 format: find the root disk, mount it, switch to it.

`-f ext2 -o DIR` writes DIR/kernel, DIR/initrd and DIR/root, as supermin 5 does.
This initrd holds only:

- a static busybox (from the appliance's packages, e.g. Debian's busybox-static,
  else the host's or --sysroot's): one self-contained program gives the init its
  shell, insmod, mount, findfs and switch_root, with no libraries to gather, on
  Debian (package busybox-static) and Fedora (busybox, linked statically) alike;
- the kernel modules that reach a virtio, SCSI or ATA disk holding ext2/ext4,
  with their dependencies, decompressed, in load order. Debian's linux-image
  package ships no modules.dep (depmod runs in its postinst), so dependencies
  are read from each module's own `.modinfo` ELF section (`depends=`, and the
  `softdep=` `pre:` modules); modules built into the kernel are simply absent;
- /init (hostfiles/init/mini-init.sh), which loads them, waits for `root=`
  (/dev/... or UUID=...), mounts it and switch_roots to the root's /init, else
  /sbin/init. The first-boot runner is started by that root /init (the same one
  the initrd format uses), so the package scripts run with the root's own /proc,
  /sys and /dev mounted, exactly as in the initrd format.
"""

from __future__ import annotations

import bisect
import gzip
import lzma
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import zstandard

from supermin.bootfiles import script_text
from supermin.content import Content
from supermin.elf import elf_section, is_static_executable
from supermin.entry import EntryKind, FileEntry
from supermin.errors import KernelError, OutputError
from supermin.kernel import Kernel, modules_place
from supermin.merge import lands_at
from supermin.outputs.archives import write_cpio
from supermin.outputs.compression import Compression
from supermin.report import Reporter
from supermin.sharedlibs import FileView, runtime_files
from supermin.spool import Spool

# What reaches the root disk: virtio-blk (`-drive if=virtio`), virtio-scsi, SCSI
# disks behind ATA (PIIX, qemu's default IDE), and ext4, which serves ext2 too.
# crc32c_generic backs the crc32c that ext4 and jbd2 ask the crypto API for.
# Then the other virtio devices an appliance talks through, as supermin 5's
# initrd loads them: nothing else will, since udev only loads drivers on "add"
# events and an appliance's `udevadm trigger` sends "change" (libguestfs's daemon
# needs virtio_console for its channel). Absent ones (built in) are skipped.
WANTED_MODULES = (
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_scsi",
    "ata_piix",
    "sd_mod",
    "crc32c_generic",
    "ext4",
    "virtio_console",
    "virtio_rng",
    "virtio_net",
    "virtio_balloon",
    "virtio_input",
    "virtio_pmem",
    "nd_pmem",
)
_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
_BUSYBOX = ("/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox")
_INIT_NAME = "mini-init.sh"
MODULES_DIR = PurePosixPath("/lib/modules")  # in the mini-initrd: NN-name.ko and `load`


def modinfo(data: bytes) -> dict[str, list[str]]:
    """The key=value pairs of a kernel module's .modinfo section, each key's values in order."""
    info: dict[str, list[str]] = {}
    for item in (elf_section(data, ".modinfo") or b"").split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def module_dependencies(info: Mapping[str, Sequence[str]]) -> list[str]:
    """The modules `depends=` names: they must be loaded first."""
    names = [n for value in info.get("depends", ()) for n in value.split(",") if n]
    return [module_name(n) for n in names]


def soft_predecessors(info: Mapping[str, Sequence[str]]) -> list[str]:
    """The `pre:` names of `softdep=`: modules or aliases (crypto-crc32c) to try first."""
    names = []
    for value in info.get("softdep", ()):
        pre = False
        for word in value.split():
            if word.endswith(":"):
                pre = word == "pre:"
            elif pre:
                names.append(module_name(word))
    return names


def module_name(file_name: str) -> str:
    """`virtio-blk.ko.xz` -> `virtio_blk`: the kernel treats - and _ alike."""
    for suffix in _SUFFIXES[::-1]:
        if file_name.endswith(suffix):
            file_name = file_name[: -len(suffix)]
            break
    return file_name.replace("-", "_")


def decompress_module(name: str, raw: bytes) -> bytes:
    if name.endswith(".ko.xz"):
        return lzma.decompress(raw)
    if name.endswith(".ko.gz"):
        return gzip.decompress(raw)
    if name.endswith(".ko.zst"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw


# ------------------------------------------------------------------ the module tree


@dataclass(frozen=True)
class ModuleTree:
    """A kernel's modules: name -> the file on the build machine, plus the built-in names."""

    files: Mapping[str, tuple[str, Content]]  # name -> (file name, its bytes)
    builtin: frozenset[str]
    where: str

    @staticmethod
    def from_directory(top: Path) -> ModuleTree:
        files: dict[str, tuple[str, Content]] = {}
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(_SUFFIXES):
                    files.setdefault(module_name(name), (name, Content(Path(dirpath) / name)))
        builtin = _read(Content(top / "modules.builtin"))
        return ModuleTree(files, _builtin(builtin), str(top))

    @staticmethod
    def from_entries(
        top: PurePosixPath, entries: Iterable[FileEntry], where: str | None = None
    ) -> ModuleTree:
        files: dict[str, tuple[str, Content]] = {}
        builtin = b""
        # Per entry, pathlib's is_relative_to and `/` parse paths: compare parts instead.
        top_parts = top.parts
        depth = len(top_parts)
        builtin_path = top / "modules.builtin"
        for entry in entries:
            content = Content.of(entry)
            if entry.kind is not EntryKind.FILE or content is None:
                continue
            path = entry.path
            if path.parts[:depth] != top_parts:
                continue
            if path == builtin_path:
                builtin = _read(content)
            elif path.name.endswith(_SUFFIXES):
                files.setdefault(module_name(path.name), (path.name, content))
        return ModuleTree(files, _builtin(builtin), where or f"{top} in the appliance")


def _read(content: Content) -> bytes:
    try:
        return content.read()
    except OSError:
        return b""


def _builtin(text: bytes) -> frozenset[str]:
    lines = text.decode(errors="replace").split()
    return frozenset(module_name(PurePosixPath(line).name) for line in lines)


def module_tree(kernel: Kernel, entries: Sequence[FileEntry], host_root: Path) -> ModuleTree | None:
    """Where the kernel's modules are: its own, the appliance's (a kernel package), the host's."""
    if kernel.modules is not None:
        # The ext2 root holds them already (build.with_kernel_modules): their
        # entries, found by bisection, spare walking the directory again.
        spliced = _subtree(entries, lands_at(entries, modules_place(kernel)))
        if spliced:
            return ModuleTree.from_entries(spliced[0].path, spliced, str(kernel.modules))
        return ModuleTree.from_directory(kernel.modules)
    if kernel.modules_in_image is not None:
        return ModuleTree.from_entries(kernel.modules_in_image, entries)
    if kernel.version:
        for base in ("lib/modules", "usr/lib/modules"):
            top = host_root / base / kernel.version
            if top.is_dir():
                return ModuleTree.from_directory(top)
    return None


def _subtree(entries: Sequence[FileEntry], top: PurePosixPath) -> Sequence[FileEntry]:
    """`top` and what is under it, from merge's output (sorted by path components)."""
    parts = top.parts
    start = bisect.bisect_left(entries, parts, key=lambda e: e.path.parts)
    end = bisect.bisect_left(entries, (*parts, _LAST_NAME), key=lambda e: e.path.parts)
    found = entries[start:end]
    if not found or found[0].path != top or found[0].kind is not EntryKind.DIR:
        return ()
    return found


_LAST_NAME = "\U0010ffff"  # sorts after every name a file can have


@dataclass(frozen=True)
class Module:
    name: str
    file_name: str
    data: bytes  # decompressed


def load_order(
    tree: ModuleTree, wanted: Iterable[str], report: Reporter | None = None
) -> list[Module]:
    """The wanted modules present in the tree and what they need, dependencies first.

    A wanted module that is absent is built in (or not built at all): skipped. A
    missing dependency that modules.builtin does not list is worth a warning.
    """
    order: list[Module] = []
    state: dict[str, bool] = {}  # False: being visited, True: placed

    def visit(name: str, needed_by: str | None) -> None:
        if name in state:
            return
        found = tree.files.get(name)
        if found is None:
            if needed_by and name not in tree.builtin and report is not None:
                report.warn(f"module {name}, needed by {needed_by}, is not in {tree.where}")
            state[name] = True
            return
        state[name] = False
        file_name, content = found
        try:
            data = decompress_module(file_name, content.read())
        except (OSError, lzma.LZMAError, zstandard.ZstdError, EOFError, gzip.BadGzipFile) as err:
            raise OutputError(f"cannot read kernel module {content}: {err}") from None
        info = modinfo(data)
        for dependency in module_dependencies(info):
            visit(dependency, name)
        for dependency in soft_predecessors(info):  # aliases are not resolved: names only
            if dependency in tree.files:
                visit(dependency, name)
        state[name] = True
        order.append(Module(name, file_name, data))

    for name in wanted:
        visit(module_name(name), None)
    return order


# ------------------------------------------------------------------ busybox


@dataclass(frozen=True)
class Busybox:
    program: Content  # the program's bytes on the build machine
    origin: str  # for messages
    libraries: tuple[tuple[PurePosixPath, Content], ...] = ()  # (path in the initrd, bytes)


def find_busybox(entries: Sequence[FileEntry], host_root: Path) -> Busybox:
    """A busybox for the initrd, best first: static from the appliance (busybox-static),
    static from the host, then a dynamic one with its interpreter and libraries, taken
    from the same place (a stock Debian host has busybox, not busybox-static)."""
    appliance, host = FileView(entries=entries), FileView(host_root=host_root)
    packages = {e.path: e.origin for e in entries}
    places = [(appliance, "in the appliance"), (host, f"under {host_root}")]
    looked: list[str] = []
    dynamic: list[Busybox] = []
    for view, where in places:
        for name in _BUSYBOX:
            found = view.resolve(PurePosixPath(name))
            if found is None:
                continue
            data = _read(found[1])
            origin = (
                f"{name} of package {packages.get(found[0], '?')}"
                if view is appliance
                else f"host {host_root / name.lstrip('/')}"
            )
            if is_static_executable(data):
                return Busybox(found[1], origin)
            libraries = runtime_files(data, view)
            if libraries:
                dynamic.append(Busybox(found[1], f"{origin} (dynamic)", tuple(libraries)))
            else:
                looked.append(f"{name} {where} (its libraries are missing there)")
    if dynamic:
        return dynamic[0]
    where = ", ".join(looked) or f"{', '.join(_BUSYBOX)} in the appliance and under {host_root}"
    raise OutputError(
        f"no busybox for the ext2 format's initrd: looked at {where}",
        "add busybox-static (Debian) or busybox (Fedora) to the packages or to the host",
    )


# ------------------------------------------------------------------ the initrd


def _dir(path: str, mtime: int) -> FileEntry:
    return FileEntry(PurePosixPath(path), EntryKind.DIR, 0o755, mtime=mtime, origin="supermin")


def _file(path: PurePosixPath, chunks: Iterable[bytes], spool: Spool, mtime: int) -> FileEntry:
    content, size = spool.store(chunks)
    return FileEntry(
        path, EntryKind.FILE, 0o755, mtime=mtime, size=size, origin="supermin", content=content
    )


def mini_initrd_entries(
    busybox: Busybox, modules: Sequence[Module], spool: Spool, mtime: int
) -> list[FileEntry]:
    directories = {"/", "/bin", "/dev", "/lib", "/proc", "/sys", "/newroot"}
    for placed, _ in busybox.libraries:
        directories.update(str(parent) for parent in placed.parents)
    entries = [_dir(d, mtime) for d in sorted(directories)]
    entries += [
        _file(placed, source.chunks(), spool, mtime) for placed, source in busybox.libraries
    ]
    entries.append(_dir(str(MODULES_DIR), mtime))
    entries += [
        FileEntry(
            PurePosixPath(name), EntryKind.CHAR, mode, rdev=rdev, mtime=mtime, origin="supermin"
        )
        for name, mode, rdev in (("/dev/console", 0o600, (5, 1)), ("/dev/null", 0o666, (1, 3)))
    ]
    entries.append(_file(PurePosixPath("/bin/busybox"), busybox.program.chunks(), spool, mtime))
    entries.append(
        FileEntry(PurePosixPath("/bin/sh"), EntryKind.SYMLINK, 0o777, target="busybox", mtime=mtime)
    )
    names = []
    for number, module in enumerate(modules):
        name = f"{number:02d}-{module.name}.ko"
        names.append(name)
        entries.append(_file(MODULES_DIR / name, [module.data], spool, mtime))
    listing = "".join(f"{name}\n" for name in names).encode()
    entries.append(_file(MODULES_DIR / "load", [listing], spool, mtime))
    entries.append(_file(PurePosixPath("/init"), [script_text(_INIT_NAME).encode()], spool, mtime))
    return sorted(entries, key=lambda e: e.path.parts)


def write_mini_initrd(
    kernel: Kernel | None,
    entries: Sequence[FileEntry],
    path: Path,
    *,
    host_root: Path,
    spool: Spool,
    mtime: int,
    compression: Compression,
    report: Reporter,
) -> None:
    """Write the ext2 format's initrd for `kernel` to `path` (a newc cpio)."""
    if kernel is None:
        raise KernelError("the ext2 format needs a kernel", "set SUPERMIN_KERNEL or --kernel")
    busybox = find_busybox(entries, host_root)
    tree = module_tree(kernel, entries, host_root)
    if tree is None:
        report.warn(
            f"no modules found for kernel {kernel.version or kernel.image}: the initrd "
            "loads none, so the root disk's drivers must be built in (set SUPERMIN_MODULES)"
        )
        modules: list[Module] = []
    else:
        modules = load_order(tree, WANTED_MODULES, report)
    report.info(
        f"initrd: busybox {busybox.origin}, {len(busybox.libraries)} libraries, "
        f"{len(modules)} modules: {' '.join(m.name for m in modules)}"
    )
    write_cpio(mini_initrd_entries(busybox, modules, spool, mtime), path, compression)
