"""Open the chosen packages, archives on every core at once.

Most of the work of opening an archive is decompression inside libarchive
(and zstandard for rpm payloads), C code that ctypes and the zstandard
binding call without holding the GIL, so threads overlap it while the spool
takes each member as it comes. Installed packages are copied from the host in
order on one thread: their hardlinks are recognised by first sight, which
must not depend on scheduling.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from supermin.packages import Package, PackageContents, PackageReader
from supermin.report import Progress, Reporter

if TYPE_CHECKING:
    from supermin.extraction_cache import ExtractionCache


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def open_packages(
    packages: Sequence[Package],
    reader: PackageReader,
    jobs: int | None = None,
    report: Reporter | None = None,
    cache: ExtractionCache | None = None,
    order: Callable[[], Sequence[Package]] | None = None,
) -> list[tuple[Package, PackageContents]]:
    """Each package with its contents, in the order given (a progress bar on a terminal).

    `order`, when given, says that order instead, worked out while the
    archives are being read (the first time a graph is met, the install
    order imports and runs networkx: ~0.08 s that one core would otherwise
    spend alone; later it is read from the cache). Installed packages
    are copied in that order, so they wait for it.
    """
    jobs = jobs or default_jobs()
    sizes = {id(package): _archive_size(package) for package in packages}
    progress = Progress(report or Reporter(), "reading", len(packages), sum(sizes.values()))

    def open_one(package: Package) -> PackageContents:
        if cache is None or package.installed:  # host files change in place: never cached
            contents = reader.open(package)
        else:
            contents = cache.open(package, reader)
        progress.advance(sizes[id(package)])
        return contents

    try:
        if jobs <= 1 or len(packages) <= 1 or any(p.installed for p in packages):
            ordered = order() if order is not None else packages
            return [(package, open_one(package)) for package in ordered]
        # Biggest archives first keeps every thread busy until the end.
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="supermin-read") as pool:
            futures = {
                id(package): pool.submit(open_one, package)
                for package in sorted(packages, key=lambda p: sizes[id(p)], reverse=True)
            }
            try:
                ordered = order() if order is not None else packages
            except BaseException:
                for future in futures.values():
                    future.cancel()
                raise
            if len(ordered) != len(futures) or any(id(p) not in futures for p in ordered):
                raise ValueError("the order must hold exactly the packages given")
            return [(package, futures[id(package)].result()) for package in ordered]
    finally:
        progress.close()


def _archive_size(package: Package) -> int:
    try:
        return package.location.stat().st_size if package.location else 0
    except OSError:
        return 0
