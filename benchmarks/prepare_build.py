"""Prepare and build timings next to the peers, measured in the same run on the same inputs.

    $VENV/bin/python benchmarks/prepare_build.py [--runs N]

- prepare `bash coreutils` against the full Debian 12 main index, with an empty
  cache (cold) and again (cached), next to `apt-get -s install
  --no-install-recommends` on the same index with an empty dpkg status;
- build `bash coreutils` from a pool of real .debs into a chroot, next to a
  `dpkg-deb -x` loop over the same closure into one tree.
Prints a Markdown table of medians. No thresholds: the numbers go into notes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.debdata import apt_env, apt_options, apt_simulate, debian_index, real_pool  # noqa: E402
from timing import timed  # noqa: E402

SUPERMIN = str(Path(sys.executable).parent / "supermin")
ROOTS = ["bash", "coreutils"]


def run(cmd: list[str], **env: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, env={**apt_env(), **env})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    index = debian_index()
    pool = real_pool(ROOTS)
    closure = apt_simulate(ROOTS)
    debs = [d for d in sorted(pool.glob("*.deb")) if d.name.split("_")[0] in closure]
    work = Path(tempfile.mkdtemp(prefix="supermin-bench-"))
    cache = work / "cache"
    rows: list[tuple[str, float]] = []
    try:
        prepare = [SUPERMIN, "prepare", *ROOTS, "--repo", str(index), "-o", str(work / "d")]
        rows.append(
            (
                "supermin prepare, full Debian 12 index, cold cache",
                timed(
                    lambda: run(prepare, SUPERMIN_CACHE_DIR=str(cache)),
                    runs,
                    before=lambda: shutil.rmtree(cache, ignore_errors=True),
                ),
            )
        )
        rows.append(
            (
                "supermin prepare, full Debian 12 index, cached",
                timed(lambda: run(prepare, SUPERMIN_CACHE_DIR=str(cache)), runs),
            )
        )
        apt = ["apt-get", *apt_options(), "-s", "install", "--no-install-recommends", *ROOTS]
        rows.append(
            ("apt-get -s install --no-install-recommends (peer)", timed(lambda: run(apt), runs))
        )

        run([SUPERMIN, "prepare", *ROOTS, "--repo", str(pool), "-o", str(work / "p")])
        build = [
            SUPERMIN,
            "build",
            str(work / "p"),
            "--repo",
            str(pool),
            "-f",
            "chroot",
            "-o",
            str(work / "c"),
        ]
        rows.append(
            (
                f"supermin build -f chroot, {len(debs)} packages",
                timed(lambda: run(build, SUPERMIN_CACHE_DIR=str(cache)), runs),
            )
        )

        def dpkg_loop() -> None:
            tree = work / "x"
            shutil.rmtree(tree, ignore_errors=True)
            for deb in debs:
                subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)

        rows.append((f"dpkg-deb -x loop, same {len(debs)} packages (peer)", timed(dpkg_loop, runs)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"| what (median of {runs}) | seconds |\n| --- | ---: |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
