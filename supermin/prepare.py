"""`supermin prepare`: check the closure resolves, write the tiny supermin.d."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from supermin.backends.registry import Universe, open_universe
from supermin.report import Reporter
from supermin.resolve import Resolution, resolve
from supermin.staging import staged


@dataclass(frozen=True)
class Sources:
    repos: tuple[Path, ...] = ()
    sysroot: Path = Path("/")
    host_cpu: str | None = None
    weak_deps: bool = False  # RPM Recommends/Supplements (Debian's Recommends stay off)


def empty_base_tarball() -> bytes:
    """A valid, empty, byte-reproducible base.tar.gz (libguestfs looks for one)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT):
        pass
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, filename="") as out:
        out.write(raw.getvalue())
    return packed.getvalue()


def resolve_roots(
    names: Sequence[str], sources: Sources, report: Reporter, *, purpose: str
) -> tuple[Universe, Resolution]:
    """Read the sources and resolve `names` against them, reporting as the CLI does."""
    with report.step(f"reading package sources ({purpose})"):
        universe = open_universe(
            sources.repos, sources.sysroot, sources.host_cpu, sources.weak_deps
        )
        report.info(f"{universe.count} packages in {universe.description}")
    with report.step("resolving dependencies"):
        resolution = resolve(universe.repository, names)
    for name in resolution.unknown:
        report.warn(f"package {name} is not known to any package source; ignoring it")
    if report.verbosity >= 1:
        explain(resolution, report)
    return universe, resolution


def explain(resolution: Resolution, report: Reporter) -> None:
    """-v: the closure, and for each package why it is there."""
    packages = resolution.packages()
    report.info(f"closure: {len(packages)} packages")
    for package in packages:
        chain = " -> ".join(resolution.why(package.name))
        flag = " (requested)" if resolution.is_root(package.name) else ""
        report.info(f"  {package.nva}{flag}: {chain}")


def prepare(names: Sequence[str], output: Path, sources: Sources, report: Reporter) -> Resolution:
    _, resolution = resolve_roots(names, sources, report, purpose="prepare")
    with staged(output) as stage:
        directory = stage.path(output)
        directory.mkdir()
        roots = "".join(f"{name}\n" for name in sorted(resolution.roots))
        (directory / "packages").write_text(roots)
        (directory / "base.tar.gz").write_bytes(empty_base_tarball())
    report.info(f"wrote {output} ({len(resolution.roots)} package roots)")
    return resolution
