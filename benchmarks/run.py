"""Every comparison of issue 7's targets table, in one run, on the same inputs.

    $VENV/bin/python benchmarks/run.py [--quick] [--runs N] [--out DIR]

For each comparison the peer and ours run alternately (peer, ours, peer, ours…),
--runs times each, with per-run set-up (emptying a cache, removing the previous
output) left out of the timing. Writes DIR/results.json (all samples),
DIR/results.md (medians, min–max, ratio ours/peer, target, met) and
DIR/results.png (a bar per comparison with its target); DIR defaults to
benchmarks/results/. A missing peer is reported on one line and its comparison
skipped; nothing is installed here (./scripts/test installs the peers as root).

--quick (one run, small inputs where the comparison allows) is the test suite's
smoke test; its figures say nothing. Ours is the `supermin` beside this
interpreter, the writers are imported from the same installation.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib.util
import os
import platform
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH))

import floor  # noqa: E402
from ext2_writer import walk_entries  # noqa: E402
from report import Result, Target, write_json, write_markdown, write_png  # noqa: E402
from support.debdata import apt_env, apt_options, debian_index, real_pool  # noqa: E402
from support.rpmdata import solv_resolve_script, testdata_dir  # noqa: E402

SUPERMIN = str(Path(sys.executable).parent / "supermin")
DEBIAN_SUPERMIN = "/usr/bin/supermin"
# Debian's libguestfs-tools ships this supermin appliance: the model client's input.
GUESTFS_D = Path("/usr/lib/x86_64-linux-gnu/guestfs/supermin.d")
PREPARE_ROOTS = ["bash", "coreutils", "util-linux", "kmod"]
# Six roots that AppStream resolves on its own (most of it needs BaseOS), and on
# which libsolv and ours agree: 50 packages.
RPM_JOB = [
    "qt5-doc",
    "langpacks-zh_TW",
    "langpacks-ja",
    "langpacks-ko",
    "langpacks-zh_CN",
    "httpcomponents-client",
]
QUICK_POOL_ROOTS = ["bash", "coreutils"]
IMAGE_SIZE = 4 << 30  # supermin's default --size
TIMESTAMP = 1_700_000_000
UUID = bytes(range(16))


def say(line: str) -> None:
    print(f"benchmark: {line}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ running things


@dataclass(frozen=True)
class Ran:
    seconds: float
    max_rss_mib: float
    system_seconds: float  # CPU time in the kernel, the process tree's


def run(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Ran:
    """Run CMD to completion, timed; its process tree's peak RSS and system time from wait4.

    Linux folds the usage of every child a process reaped into its own, so one wait4
    covers the tree. Failure raises, with the tail of stderr.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd[:3])}… exited {proc.returncode}: {' | '.join(tail)}")
    return Ran(seconds, usage.ru_maxrss / 1024, usage.ru_stime)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def alternate(
    runs: int, peer: Callable[[], float], ours: Callable[[], float], result: Result
) -> None:
    """Peer first, then ours, RUNS times: drift in the machine hits both sides alike.

    Each run starts with nothing dirty in the page cache (sync, untimed): else
    a run pays for writing back what the one before it wrote.
    """
    for _ in range(runs):
        os.sync()
        result.theirs.append(peer())
        os.sync()
        result.ours.append(ours())


_SET_ASIDE: list[Path] = []
# Deleting this many files or more is followed by a pause before the next row.
_MANY_FILES = 1000
# Seconds: how long ext4 steps over a deleted inode once written back (a sync
# precedes the pause), and then some.
_RECENTLY_DELETED = 61.0


def fresh(path: Path) -> Path:
    """PATH gone (a directory or file left by the previous run), its parent present.

    A directory is renamed aside and deleted when its row is done: on a
    journal-less ext4 (this machine's) a file created within a minute of a
    mass delete costs up to ten times more, because the inode allocator steps
    over recently deleted inodes one by one (ext4's recently_deleted(): 60 s
    once the inode table is written back, 360 s while it is dirty). Deleting
    the previous run's tree here would charge the next run for that clean-up.

    The tree's files are emptied, though (release_pages): kept whole, every
    run's output stays in memory until the row ends, and on this VM each new
    page beyond those lately freed is one the host has taken back, ten times
    dearer to write (see floor.py). A row of 3-5 runs a side then measured its
    later runs at that rate, and ours, whose cold build writes twice the peer's
    bytes (the extraction cache and the tree), pushed both sides there sooner.
    """
    if path.is_dir() and not path.is_symlink():
        aside = path.with_name(f".aside-{len(_SET_ASIDE)}-{path.name}")
        path.rename(aside)
        _SET_ASIDE.append(aside)
        if release_pages(aside):
            os.sync()  # the emptied inodes written back now, not during the next run
    else:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def release_pages(tree: Path) -> int:
    """Empty the regular files of `tree` that have no name elsewhere; how many.

    Their pages are freed at once, their inodes stay (see fresh()). A file with
    another link is left alone: it could be a host file an output links to.
    """
    emptied = 0
    for top, _dirs, names in os.walk(tree):
        for name in names:
            path = os.path.join(top, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue  # devices and fifos are never opened
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # unwritable (an unprivileged run's read-only files): kept whole
            try:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size:
                    os.ftruncate(fd, 0)
                    emptied += 1
            finally:
                os.close(fd)
    return emptied


def remove_trees(trees: Sequence[Path]) -> int:
    """Delete `trees`; how many files and directories that was.

    After many, a sync: written back, the inode tables are stepped over for
    60 s, not 360 s (see fresh()).
    """
    files = sum(len(names) + len(dirs) for tree in trees for _, dirs, names in os.walk(tree))
    for tree in trees:
        remove_tree(tree)
    if files >= _MANY_FILES:
        os.sync()
    return files


def clear_aside(pause: bool) -> None:
    """Delete what the row set aside; after many files, let ext4 forget them first."""
    files = remove_trees(_SET_ASIDE)
    _SET_ASIDE.clear()
    if pause and files >= _MANY_FILES:
        say(f"deleted {files} files set aside; waiting {_RECENTLY_DELETED:.0f} s (see fresh())")
        time.sleep(_RECENTLY_DELETED)


# Left in the results directory when a run has deleted a work tree of many
# files: the next run into that directory waits out the same minute (see
# fresh()) before its first row. Without it, a second run started at once
# measured the dpkg-deb loop of row pool-chroot-cold at 12-16 s, not 8 s:
# in ours' favour. A run into another results directory is slowed just the
# same (the inode tables are the file system's, not a directory's): the mark
# is left in the temporary directory too, where every run looks.
_DELETED_MARK = ".work-deleted"
TEMP_DIR = Path(tempfile.gettempdir())


def _deleted_marks(out: Path) -> list[Path]:
    return [out / _DELETED_MARK, TEMP_DIR / f"supermin-benchmark-{os.getuid()}{_DELETED_MARK}"]


def remove_work(work: Path) -> None:
    """Delete a run's work tree; after many files, leave the marks (beside it and in /tmp)."""
    if remove_trees([work]) >= _MANY_FILES:
        for mark in _deleted_marks(work.parent):
            mark.touch()


def wait_for_deleted(out: Path) -> None:
    """Let ext4 forget the inodes a run deleted less than a minute ago (into `out` or not)."""
    ages = []
    for mark in _deleted_marks(out):
        with contextlib.suppress(FileNotFoundError):
            ages.append(time.time() - mark.stat().st_mtime)
    age = min((a for a in ages if a >= 0), default=None)
    if age is not None and age < _RECENTLY_DELETED:
        say(f"a run deleted its work tree {age:.0f} s ago; waiting {_RECENTLY_DELETED - age:.0f} s")
        time.sleep(_RECENTLY_DELETED - age)


def remove_tree(path: Path) -> None:
    if os.geteuid() != 0:  # an appliance tree may hold directories without u+w
        subprocess.run(["chmod", "-R", "u+rwX", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def empty_dir(path: Path) -> Path:
    fresh(path).mkdir()
    return path


# ------------------------------------------------------------------ the harness


@dataclass
class Bench:
    runs: int
    quick: bool
    work: Path

    def env(self, cache: str) -> dict[str, str]:
        return {**os.environ, "SUPERMIN_CACHE_DIR": str(self.work / cache), "LC_ALL": "C"}

    @functools.cached_property
    def pool(self) -> Path:
        """The pool of .debs: the libguestfs appliance's closure (bash+coreutils if quick)."""
        return real_pool(QUICK_POOL_ROOTS if self.quick else guestfs_roots())

    @functools.cached_property
    def debs(self) -> list[Path]:
        return sorted(self.pool.glob("*.deb"))

    @functools.cached_property
    def tree(self) -> Path:
        """The pool unpacked with dpkg-deb -x into one tree: the image writers' input."""
        tree = empty_dir(self.work / "tree")
        for deb in self.debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
        return tree


def guestfs_roots() -> list[str]:
    return (GUESTFS_D / "packages").read_text().split()


def missing(tools: Sequence[tuple[str, str]]) -> str | None:
    """The first (executable, apt package) not installed, as a skip reason."""
    for exe, package in tools:
        if shutil.which(exe) is None:
            return f"{exe} not installed (apt-get install {package})"
    return None


def need_pool(bench: Bench) -> str | None:
    """The full pool is the closure of the libguestfs appliance's roots."""
    if bench.quick or (GUESTFS_D / "packages").is_file():
        return None
    return f"{GUESTFS_D} not installed (apt-get install libguestfs-tools): it names the pool"


def need_guestfs() -> str | None:
    if not (GUESTFS_D / "packages").is_file():
        return f"{GUESTFS_D} not installed (apt-get install libguestfs-tools)"
    return missing([(DEBIAN_SUPERMIN, "supermin")])


# ------------------------------------------------------------------ the comparisons
# Each fills in the Result it is given; raising leaves the row with an error.


def prepare(bench: Bench, result: Result, cold: bool) -> None:
    if reason := missing([("apt-get", "apt")]):
        result.skipped = reason
        return
    index = debian_index()
    cache = bench.work / "cache-prepare"
    apt_cache = bench.work / "apt-cache"
    ours_cmd = [SUPERMIN, "prepare", *PREPARE_ROOTS, "--repo", str(index), "-o"]
    # apt's binary cache (pkgcache.bin) goes to a scratch Dir::Cache, so "cold" and
    # "cached" mean the same for apt as for ours; a later -o wins over apt_options'.
    apt_cmd = ["apt-get", *apt_options(), "-o", f"Dir::Cache={apt_cache}", "-s", "install"]
    apt_cmd += ["--no-install-recommends", *PREPARE_ROOTS]

    def ours() -> float:
        if cold:
            empty_dir(cache)
        out = fresh(bench.work / "prepare-out")
        return run([*ours_cmd, str(out)], bench.env("cache-prepare")).seconds

    def peer() -> float:
        if cold:
            empty_dir(apt_cache)
        return run(apt_cmd, apt_env()).seconds

    if not cold:  # both caches filled first, untimed
        empty_dir(apt_cache)
        peer()
        ours()
    alternate(bench.runs, peer, ours, result)
    state = (
        "are emptied before each run (apt rebuilds pkgcache.bin)"
        if cold
        else "are both filled by one untimed run first"
    )
    result.notes.append(
        f"Index: {index.stat().st_size / 1e6:.0f} MB uncompressed Packages file. apt's "
        f"binary cache (a scratch Dir::Cache) and our SUPERMIN_CACHE_DIR {state}."
    )


def rpm_resolve(bench: Bench, result: Result) -> None:
    if importlib.util.find_spec("solv") is None:
        result.skipped = "libsolv's python bindings not installed (pip install solv)"
        return
    repo = testdata_dir() / "rpm" / "repodata" / "cs9-appstream"
    peer_cmd = [sys.executable, str(solv_resolve_script()), "--arch", "x86_64", "--no-weak"]
    peer_cmd += [str(repo), "--", *RPM_JOB]

    def ours() -> float:
        out = fresh(bench.work / "rpm-out")
        cmd = [SUPERMIN, "prepare", *RPM_JOB, "--repo", str(repo), "-o", str(out)]
        return run(cmd, bench.env("cache-rpm")).seconds

    ours()  # fills our metadata cache, untimed: the row is about the cached case
    alternate(bench.runs, lambda: run(peer_cmd).seconds, ours, result)
    result.notes.append(
        f"Job: {' '.join(RPM_JOB)}. Ours is `supermin prepare` (process start included) "
        "after one untimed run filled its metadata cache; libsolv parses primary and "
        "filelists every time (it keeps no cache of its own)."
    )


def guestfs_ext2(bench: Bench, result: Result, memory: Result) -> None:
    """The libguestfs appliance as ext2; its runs also give the peak-memory row."""
    if reason := need_guestfs():
        result.skipped = memory.skipped = reason
        return

    def build(exe: str, rss: list[float], label: str) -> float:
        out = fresh(bench.work / f"guestfs-{label}")
        ran = run([exe, "--build", "-f", "ext2", str(GUESTFS_D), "-o", str(out)], bench.env(label))
        rss.append(ran.max_rss_mib)
        return ran.seconds

    alternate(
        bench.runs,
        lambda: build(DEBIAN_SUPERMIN, memory.theirs, "peer"),
        lambda: build(SUPERMIN, memory.ours, "ours"),
        result,
    )
    result.notes.append(
        f"{GUESTFS_D} ({len(guestfs_roots())} named packages), the host's kernel, a 4 GiB "
        "sparse root; output removed before each run; our cache directory persists."
    )
    memory.notes.append(
        "Max RSS of the whole process tree (wait4) over the guestfs-ext2 runs; the peer "
        "column is Debian's supermin, for scale."
    )


def _stamp(out: Path) -> tuple[int, int]:
    st = (out / "root").stat()
    return st.st_ino, st.st_mtime_ns


def if_newer(bench: Bench, result: Result) -> None:
    if reason := need_guestfs():
        result.skipped = reason
        return
    rebuilt = {"ours": 0, "peer": 0}

    def build(exe: str, label: str) -> float:
        out = bench.work / f"if-newer-{label}"
        before = _stamp(out) if (out / "root").exists() else None
        cmd = [exe, "--build", "--if-newer", "-f", "ext2", str(GUESTFS_D), "-o", str(out)]
        seconds = run(cmd, bench.env(f"if-newer-{label}")).seconds
        if before is not None and _stamp(out) != before:
            rebuilt[label] += 1
        return seconds

    build(DEBIAN_SUPERMIN, "peer")  # the first builds, untimed; then nothing changes
    build(SUPERMIN, "ours")
    alternate(
        bench.runs, lambda: build(DEBIAN_SUPERMIN, "peer"), lambda: build(SUPERMIN, "ours"), result
    )
    if rebuilt["ours"]:
        result.failures.append(f"false rebuild on {rebuilt['ours']} of {bench.runs} runs")
    result.notes.append(
        "After one untimed --if-newer build each. A rebuild shows as the root image's inode "
        f"or mtime changing: ours rebuilt {rebuilt['ours']}, the peer {rebuilt['peer']} "
        f"of {bench.runs} times."
    )


def pool_build(bench: Bench, result: Result, cold: bool) -> None:
    if reason := need_pool(bench) or (missing([("dpkg-deb", "dpkg")]) if cold else need_guestfs()):
        result.skipped = reason
        return
    result.work = result.work.replace("POOL", f"{len(bench.debs)} packages")
    roots = QUICK_POOL_ROOTS if bench.quick else guestfs_roots()
    prepared = fresh(bench.work / "pool-d")
    run([SUPERMIN, "prepare", *roots, "--repo", str(bench.pool), "-o", str(prepared)])
    cache = bench.work / "cache-pool"
    build = [SUPERMIN, "build", str(prepared), "--repo", str(bench.pool), "-f", "chroot", "-o"]

    system: dict[str, list[float]] = {"ours": [], "peer": []}  # kernel time, run by run

    def ours() -> float:
        if cold:
            empty_dir(cache)
        out = fresh(bench.work / "pool-out")
        ran = run([*build, str(out)], bench.env("cache-pool"))
        system["ours"].append(ran.system_seconds)
        return ran.seconds

    def dpkg_loop() -> float:
        tree = empty_dir(bench.work / "pool-peer")
        start = time.perf_counter()
        ran = [run(["dpkg-deb", "-x", str(d), str(tree)]) for d in bench.debs]
        seconds = time.perf_counter() - start
        system["peer"].append(sum(r.system_seconds for r in ran))
        return seconds

    def debian_chroot() -> float:
        out = fresh(bench.work / "pool-peer")
        cmd = [DEBIAN_SUPERMIN, "--build", "-f", "chroot", str(GUESTFS_D), "-o", str(out)]
        return run(cmd).seconds

    if cold:
        cold_floor(bench, result, lambda: alternate(bench.runs, dpkg_loop, ours, result))
        result.context["system_seconds"] = system
        result.notes.append(
            "System time per run, ours: "
            + ", ".join(f"{t:.2f}" for t in system["ours"])
            + " s; the peer's: "
            + ", ".join(f"{t:.2f}" for t in system["peer"])
            + " s. Where new page-cache pages are slow to write, copies into them take most"
            " of it: ours makes two, on the cores it decompresses on; the peer one, beside."
        )
    else:
        ours()  # the warm runs follow a first one, untimed
        alternate(bench.runs, debian_chroot, ours, result)
    result.notes.append(
        f"Pool: {len(bench.debs)} .debs under {bench.pool.parent}, the closure of "
        + ("`bash coreutils` (--quick)" if bench.quick else "the libguestfs appliance's roots")
        + " downloaded by tests/support's real_pool; supermin.d prepared against it (untimed)."
    )
    if not cold:
        result.notes.append(
            "Warm: ours reads every archive from its extraction cache (filled by the cold "
            "runs, same cache directory). The peer builds the libguestfs appliance from "
            "installed packages."
            + (" --quick: ours builds the small pool, so the sizes differ." if bench.quick else "")
        )


def cold_floor(bench: Bench, result: Result, runs: Callable[[], None]) -> None:
    """Do `runs`, measuring beside them what the machine allowed (benchmarks/floor.py)."""
    probes = empty_dir(bench.work / "pool-probes")
    rates = [floor.page_cache_rate(probes / "before")]
    runs()
    rates.append(floor.page_cache_rate(probes / "after"))
    remove_tree(probes)
    bound = floor.measure(bench.debs, bench.work / "pool-peer", rates)  # the last peer tree
    result.context.update(bound.to_json())
    result.notes.append(floor.note(bound, len(bench.debs), statistics.median(result.theirs)))


def ext2_write(bench: Bench, result: Result, peer_name: str) -> None:
    package = {"mke2fs": "e2fsprogs", "genext2fs": "genext2fs"}[peer_name]
    if reason := need_pool(bench) or missing([(peer_name, package), ("e2fsck", "e2fsprogs")]):
        result.skipped = reason
        return
    from supermin.outputs.ext2 import write_ext2

    result.work = result.work.replace("POOL", f"{len(bench.debs)}-package")
    image = bench.work / "image.ext2"
    tree = bench.tree  # unpacked once, before the walk's clock starts
    start = time.perf_counter()
    entries = walk_entries(tree)
    walk = time.perf_counter() - start
    if peer_name == "mke2fs":
        peer_cmd = ["mke2fs", "-q", "-F", "-t", "ext2", "-b", "4096", "-d", str(bench.tree)]
        peer_cmd += [str(image), f"{IMAGE_SIZE // 1024}k"]
    else:
        blocks = str(IMAGE_SIZE // 4096)
        peer_cmd = ["genext2fs", "-B", "4096", "-b", blocks, "-d", str(bench.tree), str(image)]

    def ours() -> float:
        fresh(image)
        return timed(
            lambda: write_ext2(entries, image, size=IMAGE_SIZE, uuid=UUID, timestamp=TIMESTAMP)
        )

    def peer() -> float:
        fresh(image)
        return run(peer_cmd).seconds

    checked = []
    for label, action in (("peer", peer), ("ours", ours)):
        action()  # untimed: e2fsck must find each writer's image clean
        fsck = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, check=False)
        checked.append(f"{label} {'clean' if fsck.returncode == 0 else 'NOT clean'}")
        if fsck.returncode != 0 and label == "ours":
            result.failures.append("e2fsck finds our image damaged")
    alternate(bench.runs, peer, ours, result)
    fresh(image)
    result.notes.append(
        f"{len(entries)} entries, 4 GiB image, 4 KiB blocks. Ours is write_ext2 called in "
        f"this process on an lstat walk's entries (the walk, {walk:.2f} s, not counted); "
        f"the peer reads the directory. e2fsck -fn: {', '.join(checked)}."
    )


def initrd_write(bench: Bench, result: Result) -> None:
    if reason := need_pool(bench) or missing([("cpio", "cpio"), ("zstd", "zstd")]):
        result.skipped = reason
        return
    from supermin.outputs.archives import write_cpio
    from supermin.outputs.compression import Compression

    result.work = result.work.replace("POOL", f"{len(bench.debs)}-package")
    entries = walk_entries(bench.tree)
    ours_image = bench.work / "ours.img"
    peer_image = bench.work / "peer.img"
    pipeline = f"find . | cpio -o -H newc --quiet | zstd -3 -q -c > '{peer_image}'"

    def ours() -> float:
        fresh(ours_image)
        return timed(lambda: write_cpio(entries, ours_image, Compression.ZSTD))

    def peer() -> float:
        fresh(peer_image)
        return run(["sh", "-c", pipeline], cwd=bench.tree).seconds

    alternate(bench.runs, peer, ours, result)
    ours_mb, peer_mb = (p.stat().st_size / 1e6 for p in (ours_image, peer_image))
    sizes = f"ours {ours_mb:.1f} MB, peer {peer_mb:.1f} MB"
    result.notes.append(
        f"{len(entries)} entries; zstd level 3 on both sides (ours on every core, the zstd CLI on "
        f"one, its default). Ours is write_cpio "
        f"in this process on an lstat walk's entries (walk not counted). Sizes: {sizes}."
    )


# ------------------------------------------------------------------ main


def rows(bench: Bench) -> list[tuple[Result, Callable[[Result], None]]]:
    """Every comparison: its row, and what fills it in. The order is the issue's."""
    guestfs_peer = "Debian's `supermin --build -f ext2`"
    apt = "`apt-get -s install --no-install-recommends`, empty dpkg status"
    memory = Result(
        "peak-memory",
        "peak memory, libguestfs build (`-f ext2`)",
        "(Debian's supermin, for scale)",
        Target("absolute", 256, judge="max"),
        unit="MiB",
    )
    prep = f"prepare `{' '.join(PREPARE_ROOTS)}`, full Debian 12 main index"
    return [
        (
            Result("prepare-cold", f"{prep}, cold cache", apt, Target("ratio", 1.0)),
            lambda r: prepare(bench, r, cold=True),
        ),
        (
            Result("prepare-cached", f"{prep}, cached index", apt, Target("ratio", 0.25)),
            lambda r: prepare(bench, r, cold=False),
        ),
        (
            Result(
                "rpm-resolve",
                "resolve a 6-package job, CentOS Stream 9 AppStream (17,649 packages), cached",
                "libsolv (`solv-resolve.py`) incl. its load",
                Target("ratio", 1.0),
            ),
            lambda r: rpm_resolve(bench, r),
        ),
        (
            Result(
                "guestfs-ext2",
                "build the libguestfs appliance `-f ext2` from installed packages",
                guestfs_peer,
                Target("ratio", 0.5),
            ),
            lambda r: guestfs_ext2(bench, r, memory),
        ),
        (
            Result(
                "if-newer",
                "`--if-newer`, nothing changed (libguestfs appliance)",
                "Debian's supermin `--if-newer`",
                Target("absolute", 0.2),
            ),
            lambda r: if_newer(bench, r),
        ),
        (
            Result(
                "pool-chroot-cold",
                "build POOL from a local pool of .debs `-f chroot`, cold cache",
                "sequential `dpkg-deb -x` into one tree",
                Target("ratio", 0.6),
            ),
            lambda r: pool_build(bench, r, cold=True),
        ),
        (
            Result(
                "pool-chroot-warm",
                "same, extraction cache warm (a second run)",
                "Debian's `supermin --build -f chroot` from installed packages",
                Target("ratio", 1.0),
            ),
            lambda r: pool_build(bench, r, cold=False),
        ),
        (
            Result(
                "ext2-vs-mke2fs",
                "write the ext2 image of the POOL tree",
                "`mke2fs -d`",
                Target("ratio", 1.0),
            ),
            lambda r: ext2_write(bench, r, "mke2fs"),
        ),
        (
            Result(
                "ext2-vs-genext2fs",
                "write the ext2 image of the POOL tree",
                "`genext2fs -d`",
                Target("ratio", 1.0),
            ),
            lambda r: ext2_write(bench, r, "genext2fs"),
        ),
        (
            Result(
                "initrd-zstd",
                "write the zstd cpio initrd of the POOL tree",
                "`find | cpio -o -H newc | zstd -3`",
                Target("ratio", 1.0),
            ),
            lambda r: initrd_write(bench, r),
        ),
        (memory, lambda r: None),  # filled in by guestfs-ext2's runs
    ]


def measure(bench: Bench, only: Sequence[str] = ()) -> list[Result]:
    results = []
    chosen = [(result, fill) for result, fill in rows(bench) if not only or result.id in only]
    for number, (result, fill) in enumerate(chosen, start=1):
        start = time.perf_counter()
        try:
            fill(result)
        except Exception as err:  # one broken comparison must not hide the others
            result.error = f"{type(err).__name__}: {err}"
        if result.skipped:
            say(f"skipping {result.id}: {result.skipped}")
        elif result.error:
            say(f"{result.id} failed: {result.error}")
        else:
            say(f"{result.id}: done in {time.perf_counter() - start:.0f} s")
        results.append(result)
        clear_aside(pause=not bench.quick and number < len(chosen))
    return results


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{os.cpu_count()} × {model}, {memory:.0f} GiB RAM, Linux {platform.release()}"


def revision() -> str:
    """The checkout measured: figures only mean something next to a commit."""
    cmd = ["git", "-C", str(BENCH.parent), "describe", "--always", "--dirty"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one run, small inputs: a smoke test")
    parser.add_argument("--runs", type=int, help="repetitions of each side (default 3, --quick 1)")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results directory")
    parser.add_argument(
        "--only", action="append", default=[], metavar="ID", help="just this row (repeatable)"
    )
    options = parser.parse_args(argv)
    runs = options.runs or (1 if options.quick else 3)
    out: Path = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    if work.exists():
        remove_work(work)
    wait_for_deleted(out)
    work.mkdir()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        results = measure(Bench(runs, options.quick, work), options.only)
    finally:
        remove_work(work)
    command = "benchmarks/run.py" + (" --quick" if options.quick else "") + f" --runs {runs}"
    command += "".join(f" --only {row}" for row in options.only)
    meta = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "runs": runs,
        "quick": options.quick,
        "supermin": SUPERMIN,
        "revision": revision(),
        "seconds": round(time.perf_counter() - started, 1),
        # Others sharing the machine skew both sides; the load says how much there was.
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    write_json(out / "results.json", meta, results)
    write_markdown(out / "results.md", meta, results)
    write_png(out / "results.png", meta, results)
    say(f"{meta['seconds']:.0f} s in all; wrote {out}/results.{{json,md,png}}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
