"""`supermin build`: re-resolve the roots now, stream every entry, write the output."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from supermin.backends.registry import open_universe
from supermin.entry import FileEntry
from supermin.errors import OutputError, UsageError
from supermin.firstboot import firstboot_entries
from supermin.hostfiles.globs import hostfile_entries
from supermin.hostfiles.hostfs import HostFiles
from supermin.inputs import read_inputs, tarball_entries
from supermin.merge import Layer, merge
from supermin.outputs.chroot import write_chroot
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
            f"unknown output format {word!r}", "use chroot (fs, filesystem) or ext2"
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
    inputs: Sequence[Path], sources: Sources, stage: Stage, report: Reporter
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
    layers = [Layer(contents.entries, excludable=True) for _, contents in opened]
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


def build(
    inputs: Sequence[Path], output: Path, fmt: OutputFormat, sources: Sources, report: Reporter
) -> None:
    if fmt is not OutputFormat.CHROOT:
        raise UsageError(f"output format {fmt} is not implemented yet", "use -f chroot")
    with staged(output) as stage:
        entries = collect_entries(inputs, sources, stage, report)
        tree = stage.path(output)
        tree.mkdir()
        with report.step(f"writing {len(entries)} entries to {output}"):
            write_chroot(entries, tree)
            write_mtree(entries, stage.path(mtree_path(output)))
    if not output.is_dir():
        raise OutputError(f"{output} was not created")
    report.info(f"built {output}")
