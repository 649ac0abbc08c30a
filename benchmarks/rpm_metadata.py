"""Loading rpm-md metadata next to libsolv, same repository, same run.

    $VENV/bin/python benchmarks/rpm_metadata.py [--runs N] [REPO_DIR]

REPO_DIR defaults to shared/testdata's CentOS Stream 9 AppStream (17,649
packages, a 3.6 MB primary.xml.gz). Measured, each the median of --runs:

- supermin cold: parse primary.xml (streamed) into packages, with an empty
  metadata cache, writing the cache;
- supermin cached: the same call again, from the cache;
- supermin repository: building RpmRepository's indexes over those packages;
- libsolv: `solv` (the PyPI bindings) reading repomd.xml and primary.xml
  into a pool and creating its whatprovides index, the work dnf's first
  start does (dnf then keeps a .solv cache of its own).

Prints a Markdown table; no thresholds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import solv
from timing import timed  # noqa: E402

from supermin.backends.rpm.repodata import repomd_locations
from supermin.backends.rpm.repository import RpmRepository
from supermin.backends.rpm.sources import load_rpm_source
from supermin.packages import Package

DEFAULT = Path(__file__).resolve().parents[2] / "shared/testdata/rpm/repodata/cs9-appstream"


def libsolv_load(directory: Path) -> int:
    pool = solv.Pool()
    pool.setdisttype(solv.Pool.DISTTYPE_RPM)
    pool.setarch("x86_64")
    repo = pool.add_repo("bench")
    handle = solv.xfopen(str(directory / "repodata/repomd.xml"))
    repo.add_repomdxml(handle, 0)
    handle.close()
    handle = solv.xfopen(str(repomd_locations(directory)["primary"]))
    if not handle:
        raise SystemExit("libsolv cannot open the primary metadata (compression?)")
    repo.add_rpmmd(handle, None, 0)
    handle.close()
    pool.addfileprovides()
    pool.createwhatprovides()
    return int(repo.nsolvables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("repo", nargs="?", type=Path, default=DEFAULT)
    options = parser.parse_args()
    directory: Path = options.repo
    with tempfile.TemporaryDirectory(prefix="supermin-bench-") as scratch:
        cache = Path(scratch)
        os.environ["SUPERMIN_CACHE_DIR"] = str(cache)

        def empty_cache() -> None:
            for path in cache.iterdir():
                path.unlink()

        loaded: list[Package] = []
        cold = timed(lambda: loaded.extend(load_rpm_source(directory)), options.runs, empty_cache)
        packages = load_rpm_source(directory)
        cached = timed(lambda: load_rpm_source(directory), options.runs, lambda: None)
        index = timed(lambda: RpmRepository(packages, "x86_64"), options.runs, lambda: None)
        counts: list[int] = []
        libsolv = timed(lambda: counts.append(libsolv_load(directory)), options.runs, lambda: None)
    print(f"{directory} ({len(packages)} packages; libsolv: {counts[0]} solvables)\n")
    print(f"| median of {options.runs} | seconds |\n| --- | ---: |")
    for label, seconds in (
        ("supermin cold (parse + write cache)", cold),
        ("supermin cached", cached),
        ("supermin RpmRepository indexes", index),
        ("libsolv add_rpmmd + whatprovides", libsolv),
    ):
        print(f"| {label} | {seconds:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
