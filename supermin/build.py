"""`supermin build`: re-resolve the roots now, stream every entry, write the output."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from supermin.bootfiles import InitRequest, init_layer, runner_entries, systemd_unit_layer
from supermin.cache import cache_dir
from supermin.entry import EntryKind, FileEntry
from supermin.errors import UsageError
from supermin.extraction_cache import ExtractionCache
from supermin.firstboot import firstboot_entries
from supermin.hostfiles.globs import hostfile_entries
from supermin.hostfiles.hostfs import HostFiles
from supermin.inputs import read_inputs, tarball_entries
from supermin.kernel import Kernel, KernelSearch, find_kernel, modules_place
from supermin.merge import Layer, exclude_matcher, lands_at, merge, merge_subtree
from supermin.outputs.archives import dropped_xattrs as cpio_dropped_xattrs
from supermin.outputs.archives import write_cpio, write_tar
from supermin.outputs.chroot import dropped_xattrs as chroot_dropped_xattrs
from supermin.outputs.chroot import write_chroot
from supermin.outputs.compression import Compression, compression_from_name
from supermin.outputs.mtree import write_mtree
from supermin.owners import with_owners
from supermin.packagelist import packagelist_layer
from supermin.prepare import Sources, resolve_roots
from supermin.reading import open_packages
from supermin.report import Reporter
from supermin.spool import Spool
from supermin.staging import Stage, staged

# The ext2 image writer and the mini-initrd's (~30 ms to import) only where used.
if TYPE_CHECKING:
    from supermin.earlymodules import ModulesWalk
    from supermin.ordering import OrderHelper
    from supermin.outputs.ext2 import EarlyCopies


class OutputFormat(StrEnum):
    CHROOT = "chroot"
    EXT2 = "ext2"
    INITRD = "initrd"
    TAR = "tar"


FORMAT_ALIASES = {"fs": OutputFormat.CHROOT, "filesystem": OutputFormat.CHROOT}


def parse_format(word: str) -> OutputFormat:
    try:
        return FORMAT_ALIASES.get(word) or OutputFormat(word)
    except ValueError:
        raise UsageError(
            f"unknown output format {word!r}", "use chroot (fs, filesystem), ext2, initrd or tar"
        ) from None


def source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds") from None


def mtree_path(output: Path) -> Path:
    return output.with_name(output.name + ".mtree")


def collect_entries(
    inputs: Sequence[Path],
    sources: Sources,
    stage: Stage,
    report: Reporter,
    base: Sequence[Layer] = (),
    init: InitRequest | None = None,
    packagelist: bool = False,
    early: EarlyCopies | None = None,
    order_helper: OrderHelper | None = None,
) -> list[FileEntry]:
    """Every entry of the appliance, merged. `early` is the ext2 image begun by
    earlymodules.py: it is offered the packages' large host files as soon as
    they are known; `order_helper` computes the install order if it is not cached."""
    appliance = read_inputs(inputs)
    epoch = source_date_epoch()
    mtime = epoch or int(time.time())
    universe, resolution = resolve_roots(appliance.packages, sources, report, purpose="build")
    spool = Spool(stage.work / "spool")
    host = HostFiles(
        sources.sysroot, exclude_matcher(appliance.excludes) if appliance.excludes else None
    )
    reader = universe.reader(spool, host)
    chosen = resolution.packages()
    with report.step(f"reading {len(chosen)} packages"):
        cache = ExtractionCache.at(cache_dir())
        opened = open_packages(
            chosen,
            reader,
            report=report,
            cache=cache,
            order=lambda: resolution.install_order(order_helper),
        )
        if cache is not None:
            report.info(cache.summary())
    ordered = [package for package, _ in opened]
    if early is not None:
        # The packages' large files too (installed packages: host files), while
        # the rest is collected. Offering costs ~9 µs a file in this process: the
        # files from 64 KiB, a twentieth of them, hold nine tenths of the bytes.
        early.offer(
            (entry for _, contents in opened for entry in contents.entries), smallest=64 << 10
        )
    lua = sum(s.interpreter == "<lua>" for _, contents in opened for s in contents.scripts)
    if lua:
        report.warn(
            f"{lua} Lua scriptlets are stored for first boot, marked <lua> in the manifest: "
            "only rpm's embedded Lua can run them"
        )
    layers = [*base, *(Layer(contents.entries, excludable=True) for _, contents in opened)]
    # The package manager's database (a backend's choice): above the packages'
    # files, below what the user adds.
    database = universe.database(opened, spool, mtime)
    if database is not None:
        layers.append(Layer(database.entries))
    layers.append(Layer(hostfile_entries(appliance.hostfiles, host)))
    layers.extend(Layer(tarball_entries(path, spool)) for path in appliance.tarballs)
    layers.append(Layer(firstboot_entries(opened, spool, mtime=mtime, database=database)))
    layers.append(Layer(runner_entries(spool, mtime)))
    layers.insert(0, systemd_unit_layer(spool, mtime, layers))  # lowest: the appliance's wins
    if init is not None:  # lowest layer: an /init the appliance brings itself wins
        layers.insert(0, init_layer(init.program, layers, spool, mtime, report))
    if host.unreadable:
        report.warn(
            f"{len(host.unreadable)} host files could not be read and were left out "
            f"(first: {host.unreadable[0]}); run as root to include them"
        )
    if packagelist:  # --include-packagelist: /packagelist, above everything else
        layers.append(packagelist_layer(ordered, spool, mtime))
    with report.step("merging entries"):
        entries = merge(layers, appliance.excludes, epoch)
    # Owner names through the appliance's own /etc/passwd and /etc/group (DESIGN.md §4).
    return with_owners(entries, opened, spool, mtime, report)


def with_kernel_modules(
    entries: list[FileEntry],
    kernel: Kernel,
    host_root: Path,
    report: Reporter,
    walked: ModulesWalk | None = None,
) -> list[FileEntry]:
    """The ext2 root also gets the host kernel's modules, as supermin 5 gives it.

    The mini-initrd only loads what mounts the root; the appliance's own init
    (libguestfs's, udev) loads the rest (virtio_console, dm_mod…) from
    /lib/modules/VERSION. A kernel from the package set brings its modules itself.
    `walked` is the walk made before the packages were read (earlymodules.py),
    used if it is of these modules, placed where they land.
    """
    if kernel.modules is None or kernel.modules_in_image is not None:
        return entries
    from supermin.earlymodules import moved, walk_modules

    # Walked straight to where merge would move it (/usr/lib/modules with merged /usr).
    at = lands_at(entries, modules_place(kernel))
    how = ", walked and copied while the packages were read"
    if walked is None or walked.directory != kernel.modules:
        walked, how = walk_modules(kernel.modules, at, host_root), ""
    elif walked.at != at:
        walked = moved(walked, at)
    if walked.unreadable:
        report.warn(
            f"{len(walked.unreadable)} files of the kernel modules in {kernel.modules} could "
            f"not be read and were left out (first: {walked.unreadable[0]})"
        )
    report.info(f"kernel modules: {len(walked.entries)} entries from {kernel.modules}{how}")
    return merge_subtree(entries, walked.entries, at, source_date_epoch())


# An early console needs these before udev or devtmpfs exist; packages may override.
INITRD_DEVICES = Layer(
    [
        FileEntry(PurePosixPath("/dev"), EntryKind.DIR, 0o755, origin="supermin"),
        FileEntry(
            PurePosixPath("/dev/console"), EntryKind.CHAR, 0o600, rdev=(5, 1), origin="supermin"
        ),
        FileEntry(
            PurePosixPath("/dev/null"), EntryKind.CHAR, 0o666, rdev=(1, 3), origin="supermin"
        ),
    ]
)


@dataclass(frozen=True)
class OutputOptions:
    fmt: OutputFormat = OutputFormat.CHROOT
    size: int = 4 << 30  # ext2 apparent size, supermin's default
    compression: Compression = Compression.ZSTD  # initrd
    with_kernel: bool = False  # initrd: -o DIR gets DIR/kernel and DIR/initrd
    kernel: Path | None = None  # --kernel
    init: PurePosixPath | None = None  # --init: what /init runs after first boot
    copy_kernel: bool = False  # --copy-kernel: DIR/kernel a copy, not a symlink to the host's
    include_packagelist: bool = False  # --include-packagelist: write /packagelist


def initrd_is_directory(output: str) -> bool:
    """Whether `-o OUTPUT` of the initrd format means DIR/kernel + DIR/initrd.

    The cpio alone (no kernel needed) when the name looks like an image file:
    `.img`, `.cpio` or a compression suffix (`initrd.img`, `x.cpio.zst`), and it
    is not an existing directory or written with a trailing `/`. Anything
    else (`-o appliance`, `-o appliance.d`, `-o out/`) is a directory.
    """
    path = Path(output)
    if output.endswith("/") or path.is_dir():
        return True
    return path.suffix.lower() not in _IMAGE_SUFFIXES


_IMAGE_SUFFIXES = {".img", ".cpio", ".gz", ".xz", ".zst", ".zstd", ".lz4", ".bz2", ".lzma", ".cgz"}


def filesystem_uuid(entries: Sequence[FileEntry], epoch: int | None) -> bytes:
    """Random, or with SOURCE_DATE_EPOCH derived from the inputs so rebuilds match."""
    if epoch is None:
        return uuid.uuid4().bytes
    digest = hashlib.sha256(str(epoch).encode())
    for e in entries:
        digest.update(
            f"{e.path}\0{e.kind}\0{e.mode}\0{e.uid}\0{e.gid}\0{e.size}\0"
            f"{e.target}\0{e.rdev}\0{e.mtime}\n".encode()
        )
    return uuid.UUID(bytes=digest.digest()[:16], version=4).bytes


def write_output(
    entries: Sequence[FileEntry],
    output: Path,
    options: OutputOptions,
    stage: Stage,
    kernel: Kernel | None = None,
    report: Reporter | None = None,
    host_root: Path = Path("/"),  # --sysroot: the ext2 initrd's busybox and modules may be here
    early: EarlyCopies | None = None,  # ext2: the image, begun (earlymodules.py)
    staged_directory: Path | None = None,  # ext2: stage.path(output), made already
) -> None:
    match options.fmt:
        case OutputFormat.CHROOT:
            tree = stage.path(output)
            tree.mkdir()
            # The mtree is Python's work, the tree the kernel's (its threads
            # wait in system calls, without the GIL): they overlap.
            with ThreadPoolExecutor(1, thread_name_prefix="supermin-mtree") as pool:
                mtree = pool.submit(write_mtree, entries, stage.path(mtree_path(output)))
                write_chroot(entries, tree)
                mtree.result()
        case OutputFormat.EXT2:
            from supermin.miniinitrd import write_mini_initrd
            from supermin.outputs.ext2 import write_ext2

            directory = staged_directory or _made(stage.path(output))
            epoch = source_date_epoch()
            timestamp = epoch if epoch is not None else int(time.time())

            def boot_files() -> None:
                # supermin's layout: the root boots with DIR/kernel and the mini-initrd.
                write_mini_initrd(
                    kernel,
                    entries,
                    directory / "initrd",
                    host_root=host_root,
                    spool=Spool(stage.work / "mini-initrd"),
                    mtime=timestamp,
                    compression=options.compression,
                    report=report or Reporter(),
                )
                if kernel is not None:
                    place_kernel(kernel, directory / "kernel", options.copy_kernel, stage)

            # The boot files are made while the image's data is still being copied.
            write_ext2(
                entries,
                directory / "root",
                size=options.size,
                uuid=filesystem_uuid(entries, epoch),
                timestamp=timestamp,
                meanwhile=boot_files,
                early=early,
            )
        case OutputFormat.INITRD if kernel is not None:
            directory = stage.path(output)
            directory.mkdir()
            write_cpio(entries, directory / "initrd", options.compression)
            place_kernel(kernel, directory / "kernel", options.copy_kernel, stage)
        case OutputFormat.INITRD:
            write_cpio(entries, stage.path(output), options.compression)
        case OutputFormat.TAR:
            write_tar(entries, stage.path(output), compression_from_name(output))


def _made(directory: Path) -> Path:
    directory.mkdir()
    return directory


def place_kernel(kernel: Kernel, destination: Path, copy: bool, stage: Stage) -> None:
    """A symlink to the host's kernel, as supermin 5 makes; a copy with --copy-kernel.

    A kernel taken from a package only exists in this build's spool, or in the
    extraction cache, which may be pruned: always copied.
    """
    if kernel.image_span is not None:  # a member of a spool or cache pack
        with destination.open("xb") as out:
            for chunk in kernel.content.chunks():
                out.write(chunk)
        return
    image = kernel.image.resolve()
    cache = cache_dir()
    cached = cache is not None and image.is_relative_to(cache.resolve())
    if copy or cached or image.is_relative_to(stage.work.resolve()):
        shutil.copyfile(kernel.image, destination)
    else:
        destination.symlink_to(kernel.image.absolute())


def warn_about_dropped_xattrs(
    entries: Sequence[FileEntry], fmt: OutputFormat, report: Reporter
) -> None:
    """Say once which extended attributes (file capabilities…) an output cannot keep."""
    if fmt is OutputFormat.INITRD:
        lost, why = cpio_dropped_xattrs(entries), "a newc cpio cannot hold extended attributes"
    elif fmt is OutputFormat.CHROOT:
        lost = chroot_dropped_xattrs(entries)
        why = "without root only user.* extended attributes can be set"
    else:
        return
    if lost:
        report.warn(
            f"{why}: {len(lost)} paths lose theirs (first: {lost[0]}); "
            "build as root, or use -f tar or -f ext2"
        )


def build(
    inputs: Sequence[Path],
    output: Path,
    options: OutputOptions,
    sources: Sources,
    report: Reporter,
    order_helper: OrderHelper | None = None,
) -> None:
    if options.fmt is OutputFormat.TAR:
        compression_from_name(output)  # refuse a bad name before any work
    # Both boot the appliance's tree: it gets our /init (first boot, then --init)
    # and the directories the kernel filesystems are mounted on.
    bootable = options.fmt in (OutputFormat.INITRD, OutputFormat.EXT2)
    base = [INITRD_DEVICES] if bootable else []
    init = InitRequest(options.init) if bootable else None
    search = KernelSearch(os.environ, options.kernel, sources.sysroot, sources.host_cpu)
    with staged(output) as stage:
        early = directory = None
        if options.with_kernel and options.fmt is OutputFormat.EXT2:
            # The likely kernel's modules start being copied into the image now.
            from supermin.earlymodules import start_early_modules

            directory = stage.path(output)
            directory.mkdir()
            early = start_early_modules(search, directory / "root", options.size)
        try:
            entries = collect_entries(
                inputs,
                sources,
                stage,
                report,
                base,
                init,
                options.include_packagelist,
                early.copies if early is not None else None,
                order_helper,
            )
            kernel = None
            if options.with_kernel:
                kernel = find_kernel(search, entries)
                report.info(f"kernel {kernel.version or '(release unknown)'}: {kernel.origin}")
                if options.fmt is OutputFormat.EXT2:
                    walked = early.walk if early is not None else None
                    entries = with_kernel_modules(entries, kernel, sources.sysroot, report, walked)
            warn_about_dropped_xattrs(entries, options.fmt, report)
            with report.step(f"writing {len(entries)} entries to {output} ({options.fmt})"):
                write_output(
                    entries,
                    output,
                    options,
                    stage,
                    kernel,
                    report,
                    sources.sysroot,
                    early.copies if early is not None else None,
                    directory,
                )
        finally:
            if early is not None:
                early.copies.close()  # a no-op once the writer has taken it over
    report.info(f"built {output}")
