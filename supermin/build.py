"""`supermin build`: re-resolve the roots now, stream every entry, write the output."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from supermin.backends.registry import open_universe
from supermin.entry import EntryKind, FileEntry
from supermin.errors import UsageError
from supermin.firstboot import firstboot_entries
from supermin.hostfiles.globs import hostfile_entries
from supermin.hostfiles.hostfs import HostFiles
from supermin.inputs import read_inputs, tarball_entries
from supermin.merge import Layer, merge
from supermin.outputs.archives import write_cpio, write_tar
from supermin.outputs.chroot import write_chroot
from supermin.outputs.compression import Compression, compression_from_name
from supermin.outputs.ext2 import write_ext2
from supermin.outputs.mtree import write_mtree
from supermin.prepare import Sources, explain
from supermin.report import Reporter
from supermin.resolve import resolve
from supermin.spool import Spool
from supermin.staging import Stage, staged


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
) -> list[FileEntry]:
    appliance = read_inputs(inputs)
    epoch = source_date_epoch()
    with report.step("reading package sources (build)"):
        universe = open_universe(sources.repos, sources.sysroot, sources.host_cpu)
    with report.step("resolving dependencies"):
        resolution = resolve(universe.repository, appliance.packages)
    for name in resolution.unknown:
        report.warn(f"package {name} is not known to any package source; ignoring it")
    if report.verbosity >= 1:
        explain(resolution, report)
    spool = Spool(stage.work / "spool")
    host = HostFiles(sources.sysroot)
    reader = universe.reader(spool, host)
    ordered = resolution.install_order()
    with report.step(f"reading {len(ordered)} packages"):
        opened = [(package, reader.open(package)) for package in ordered]
    layers = [*base, *(Layer(contents.entries, excludable=True) for _, contents in opened)]
    layers.append(Layer(hostfile_entries(appliance.hostfiles, host)))
    layers.extend(Layer(tarball_entries(path, spool)) for path in appliance.tarballs)
    layers.append(Layer(firstboot_entries(opened, spool, mtime=epoch or int(time.time()))))
    if host.unreadable:
        report.warn(
            f"{len(host.unreadable)} host files could not be read and were left out "
            f"(first: {host.unreadable[0]}); run as root to include them"
        )
    with report.step("merging entries"):
        return merge(layers, appliance.excludes, epoch)


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
    entries: Sequence[FileEntry], output: Path, options: OutputOptions, stage: Stage
) -> None:
    match options.fmt:
        case OutputFormat.CHROOT:
            tree = stage.path(output)
            tree.mkdir()
            write_chroot(entries, tree)
            write_mtree(entries, stage.path(mtree_path(output)))
        case OutputFormat.EXT2:
            directory = stage.path(output)
            directory.mkdir()
            epoch = source_date_epoch()
            write_ext2(
                entries,
                directory / "root",
                size=options.size,
                uuid=filesystem_uuid(entries, epoch),
                timestamp=epoch if epoch is not None else int(time.time()),
            )
        case OutputFormat.INITRD:
            write_cpio(entries, stage.path(output), options.compression)
        case OutputFormat.TAR:
            write_tar(entries, stage.path(output), compression_from_name(output))


def build(
    inputs: Sequence[Path],
    output: Path,
    options: OutputOptions,
    sources: Sources,
    report: Reporter,
) -> None:
    if options.fmt is OutputFormat.TAR:
        compression_from_name(output)  # refuse a bad name before any work
    base = [INITRD_DEVICES] if options.fmt is OutputFormat.INITRD else []
    with staged(output) as stage:
        entries = collect_entries(inputs, sources, stage, report, base)
        with report.step(f"writing {len(entries)} entries to {output} ({options.fmt})"):
            write_output(entries, output, options, stage)
    report.info(f"built {output}")
