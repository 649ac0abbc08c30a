"""The cpio initrd writer next to `find | cpio -o -H newc | zstd`, same tree, same run.

    $VENV/bin/python benchmarks/initrd_writer.py [--runs N] [--copies 10]

The tree is the real Debian closure of `bash coreutils hello` unpacked with
`dpkg-deb -x` (the ext2 benchmark's helpers), and that tree copied --copies
times for a larger workload. supermin's writer gets the entries an lstat walk
gives (timed apart); the peer gets the directory. Both compress with zstd at
its default level. Prints a Markdown table of medians; no thresholds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from ext2_writer import replicate, unpack_pool, walk_entries  # noqa: E402
from timing import timed  # noqa: E402

from supermin.outputs.archives import write_cpio  # noqa: E402
from supermin.outputs.compression import Compression  # noqa: E402


def measure(tree: Path, runs: int, work: Path) -> tuple[float, float, float]:
    start = time.perf_counter()
    entries = walk_entries(tree)
    walk = time.perf_counter() - start
    ours = work / "ours.img"
    peer = work / "peer.img"
    supermin = timed(
        lambda: write_cpio(entries, ours, Compression.ZSTD),
        runs,
        before=lambda: ours.unlink(missing_ok=True),
    )
    pipeline = (
        f"cd {tree} && find . | LC_ALL=C sort | cpio -o -H newc --quiet | zstd -q -c > {peer}"
    )
    find_cpio = timed(
        lambda: subprocess.run(["sh", "-c", pipeline], check=True),
        runs,
        before=lambda: peer.unlink(missing_ok=True),
    )
    return walk, supermin, find_cpio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--copies", type=int, default=10)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="supermin-bench-") as scratch:
        work = Path(scratch)
        tree = unpack_pool(work)
        print(
            f"| tree (median of {options.runs}) | lstat walk | supermin write_cpio | "
            "find \\| cpio \\| zstd | ratio |\n| --- | ---: | ---: | ---: | ---: |"
        )
        for label, top in (
            ("closure", tree),
            (f"closure x{options.copies}", replicate(tree, options.copies, work)),
        ):
            walk, ours, peer = measure(top, options.runs, work)
            print(f"| {label} | {walk:.3f} s | {ours:.3f} s | {peer:.3f} s | {ours / peer:.2f} |")


if __name__ == "__main__":
    main()
