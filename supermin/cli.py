"""Command line: supermin 5's spelling (--prepare/--build) and subcommands (prepare/build)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from supermin import __version__
from supermin.errors import SuperminError, UsageError
from supermin.freshness import fingerprint, is_fresh, record
from supermin.report import Reporter

# The build and prepare machinery (the resolver's networkx, libarchive,
# python-debian, the output writers) is imported where it is used, so that
# `--if-newer` with nothing to do, --version and --help start in a few ms.
if TYPE_CHECKING:
    from supermin.build import OutputOptions
    from supermin.prepare import Sources

_SUBCOMMANDS = {"prepare": "--prepare", "build": "--build"}


class _Removed(argparse.Action):
    """An option supermin 5 keeps only to refuse, with why, as soon as it is met (exit 1)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        self.explanation: str = kwargs.pop("explanation")
        self.advice: str = kwargs.pop("advice")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        raise UsageError(self.explanation, self.advice)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supermin",
        description="Compile a small Linux appliance from distribution packages.",
        epilog="supermin prepare PKG... -o DIR | supermin build DIR... -f chroot -o OUT",
    )
    parser.add_argument("-help", action="help", help=argparse.SUPPRESS)  # supermin 5 has it
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--prepare",
        dest="mode",
        action="store_const",
        const="prepare",
        help="resolve packages and write a supermin.d directory",
    )
    mode.add_argument(
        "--build",
        dest="mode",
        action="store_const",
        const="build",
        help="build an appliance from supermin.d directories",
    )
    parser.add_argument("args", nargs="*", metavar="PKG|DIR")
    parser.add_argument(
        "-o",
        "--output",
        help="output directory or file; -f initrd: DIR (kernel + initrd) or FILE.img (cpio only)",
    )
    parser.add_argument(
        "-f",
        "--format",
        default=None,
        help="output format: chroot (alias fs, filesystem), ext2, initrd, tar",
    )
    parser.add_argument("--size", help="ext2 image size, e.g. 4G (the default), 512M")
    parser.add_argument(
        "--kernel",
        type=Path,
        help="kernel to boot (default: $SUPERMIN_KERNEL, a kernel package, then the host's)",
    )
    parser.add_argument(
        "--init",
        type=PurePosixPath,
        help="-f initrd, ext2: what /init runs after first boot (default /sbin/init, else sh)",
    )
    parser.add_argument(
        "--compress",
        help="initrd compression: zstd (-f initrd's default), xz, gzip, none (-f ext2's "
        "small initrd's default, as supermin 5 writes it)",
    )
    parser.add_argument(
        "--repo",
        action="append",
        type=Path,
        default=[],
        help="package source: a tree of .debs or an APT repository (repeatable);"
        " default: the packages installed on this system",
    )
    parser.add_argument(
        "--sysroot",
        type=Path,
        default=Path("/"),
        help="use the installed packages of this root instead of /",
    )
    parser.add_argument(
        "--use-installed",
        action="store_true",
        help="accepted for compatibility: installed packages are the default",
    )
    parser.add_argument(
        "--weak-deps", action="store_true", help="also install RPM weak dependencies"
    )
    parser.add_argument("--host-cpu", help="target architecture (default: this machine's)")
    parser.add_argument(
        "--if-newer",
        action="store_true",
        help="skip the build when nothing that shapes the output changed",
    )
    parser.add_argument("--lock", type=Path, help="hold this lock file for the whole run")
    parser.add_argument(
        "--list-drivers", action="store_true", help="list package formats and if detected here"
    )
    caching = parser.add_mutually_exclusive_group()
    caching.add_argument(
        "--cache-dir",
        type=Path,
        help="where parsed indexes and opened packages are cached"
        " (default: $SUPERMIN_CACHE_DIR, else $XDG_CACHE_HOME/supermin)",
    )
    caching.add_argument("--no-cache", action="store_true", help="neither read nor write any cache")
    parser.add_argument(
        "--prune-cache",
        nargs="?",
        type=int,
        const=30,
        metavar="DAYS",
        help="remove cached data unused for DAYS days (default 30), then exit",
    )
    parser.add_argument(
        "--copy-kernel",
        action="store_true",
        help="ext2/initrd: copy the kernel into the output instead of symlinking the host's",
    )
    parser.add_argument(
        "--packager-config", help="accepted for compatibility: package sources come from --repo"
    )
    parser.add_argument(
        "--include-packagelist",
        action="store_true",
        help="--build: add /packagelist, the sorted list of the appliance's packages",
    )
    parser.add_argument(
        "--names",
        action=_Removed,
        nargs=0,
        explanation="this is supermin 5; --names is a supermin 4 option",
        advice="use libguestfs >= 1.26, or find supermin 4",
        help="refused: for people needing supermin 4",
    )
    parser.add_argument(
        "--dtb",
        action=_Removed,
        metavar="WILDCARD",
        explanation="--dtb was removed in supermin 5.1.18",
        advice="drop it and its wildcard: QEMU generates the device tree itself",
        help="refused: obsolete (QEMU makes the device tree)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="say what is done; -vv: more detail"
    )
    parser.add_argument("-V", "--version", action="store_true", help="print the version")
    return parser


_TAKES_VALUE = {
    "-o",
    "--output",
    "-f",
    "--format",
    "--repo",
    "--sysroot",
    "--host-cpu",
    "--size",
    "--compress",
    "--kernel",
    "--init",
    "--lock",
    "--cache-dir",
    "--packager-config",
    "--dtb",
}


def _normalise(argv: Sequence[str]) -> list[str]:
    """Turn the subcommand word (the first operand, wherever it stands) into its flag."""
    args = list(argv)
    index = 0
    while index < len(args):
        word = args[index]
        if word in _TAKES_VALUE:
            index += 2
            continue
        if not word.startswith("-"):
            if word in _SUBCOMMANDS:
                args[index] = _SUBCOMMANDS[word]
            break
        index += 1
    return args


def _output(value: str | None) -> Path:
    if value is None:
        raise UsageError("missing -o OUTPUT", "say where to write with -o")
    return Path(value[:-1] if len(value) > 1 and value.endswith("/") else value)


def _output_options(options: argparse.Namespace) -> OutputOptions:
    from supermin.build import OutputFormat, OutputOptions, initrd_is_directory, parse_format
    from supermin.outputs.compression import parse_compression

    size = OutputOptions.size
    if options.size is not None:
        from supermin.outputs.ext2 import parse_size  # the image writer: ~15 ms to import

        try:
            size = parse_size(options.size)
        except ValueError as err:
            raise UsageError(f"--size {options.size}: {err}") from None
    fmt = parse_format(options.format)
    if options.init is not None and not options.init.is_absolute():
        raise UsageError(f"--init {options.init}: give the program's absolute path in the image")
    return OutputOptions(
        fmt,
        size,
        # ext2's small initrd: an uncompressed cpio by default, like supermin 5's (a few
        # MB read once at boot; compressing it cost a tenth of the libguestfs build).
        parse_compression(options.compress or ("none" if fmt is OutputFormat.EXT2 else "zstd")),
        with_kernel=fmt is OutputFormat.EXT2
        or (fmt is OutputFormat.INITRD and initrd_is_directory(options.output or "")),
        kernel=options.kernel,
        init=options.init,
        copy_kernel=options.copy_kernel,
        include_packagelist=options.include_packagelist,
    )


def check_tmpdir(environ: Mapping[str, str]) -> None:
    """supermin 5 refuses a set but relative (or empty) $TMPDIR before anything else."""
    tmpdir = environ.get("TMPDIR")
    if tmpdir is not None and not os.path.isabs(tmpdir):
        raise UsageError(f"environment variable $TMPDIR must be an absolute path, not {tmpdir!r}")


def run(argv: Sequence[str], report: Reporter) -> int:
    check_tmpdir(os.environ)
    options = _parser().parse_args(_normalise(argv))
    report.verbosity = options.verbose
    if options.version:
        print(f"supermin {__version__}")
        return 0
    if options.list_drivers:
        from supermin.backends.registry import list_drivers

        for name, detected in list_drivers(options.sysroot):
            print(f"{name}: {'detected' if detected else 'not detected'}")
        return 0
    report.info(f"version: {__version__}")  # supermin 5's first -v line; libguestfs logs it
    report.debug(f"command line: {' '.join(argv)}")
    if options.prune_cache is not None:
        return _prune_cache(options.cache_dir, options.prune_cache, report)
    with _locked(options.lock):
        return _run_mode(options, argv, report)


@contextlib.contextmanager
def _locked(path: Path | None) -> Iterator[None]:
    """--lock: a blocking lock held for the whole run, taken before the if-newer check."""
    if path is None:
        yield
        return
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _shaping(argv: Sequence[str]) -> list[str]:
    """The command line less what cannot change the output (verbosity, locking, caching...)."""
    kept: list[str] = []
    skip_value = False
    for word in argv:
        if skip_value:
            skip_value = False
        elif word in ("--lock", "--cache-dir"):
            skip_value = True
        elif word.startswith(("--lock=", "--cache-dir=")):
            pass
        elif not (word in ("--if-newer", "--verbose", "--no-cache") or re.fullmatch(r"-v+", word)):
            kept.append(word)
    return kept


def _use_cache_options(options: argparse.Namespace) -> None:
    """--cache-dir and --no-cache, through the variable every cache reads (cache.cache_dir).

    The environment rather than a parameter: the parsed-index caches sit deep
    in the backends, and a child supermin would want the same choice. Set
    after the --if-newer fingerprint is taken, as caching does not shape the output.
    """
    if options.no_cache:
        os.environ["SUPERMIN_CACHE_DIR"] = ""
    elif options.cache_dir is not None:
        os.environ["SUPERMIN_CACHE_DIR"] = str(options.cache_dir.absolute())


def _prune_cache(directory: Path | None, days: int, report: Reporter) -> int:
    from supermin.cache import cache_dir
    from supermin.extraction_cache import prune

    if days < 0:
        raise UsageError(f"--prune-cache={days}: give a number of days, 0 or more")
    directory = directory or cache_dir()
    if directory is None:
        raise UsageError("caching is off ($SUPERMIN_CACHE_DIR is empty)", "say --cache-dir DIR")
    pruned = prune(directory, days)
    report.info(f"pruned {directory}: {pruned.removed} entries, {pruned.freed / 1e6:.1f} MB freed")
    return 0


def _run_mode(options: argparse.Namespace, argv: Sequence[str], report: Reporter) -> int:
    # The usage checks come in supermin 5's order: mode, format, output, operands.
    if options.mode == "prepare":
        output = _output(options.output)
        if not options.args:
            raise UsageError("--prepare needs at least one package name")
        from supermin.prepare import prepare

        _use_cache_options(options)
        prepare(options.args, output, _sources(options), report)
    elif options.mode == "build":
        if options.format is None:
            raise UsageError("--build needs -f FORMAT", "e.g. -f chroot")
        output = _output(options.output)
        if not options.args:
            raise UsageError("--build needs at least one input directory")
        inputs = [Path(a) for a in options.args]
        stamp = None
        if options.if_newer:  # only then is a stamp beside the output wanted
            stamp = fingerprint(inputs, options.repo, options.sysroot, _shaping(argv), os.environ)
            report.debug(f"--if-newer fingerprint {stamp}")
            if is_fresh(output, stamp):
                report.info(f"{output} is up to date")
                return 0
        _use_cache_options(options)
        from supermin.ordering import helper_worthwhile, order_helper

        # Started before the build's own imports, which it overlaps (see supermin.ordering).
        with order_helper(helper_worthwhile()) as helper:
            from supermin.build import build

            build(inputs, output, _output_options(options), _sources(options), report, helper)
        if stamp is not None:
            record(output, stamp)
    else:
        raise UsageError("say --prepare or --build (or: supermin prepare / supermin build)")
    return 0


def _sources(options: argparse.Namespace) -> Sources:
    from supermin.prepare import Sources

    return Sources(tuple(options.repo), options.sysroot, options.host_cpu, options.weak_deps)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    finally:
        if argv is None:  # the program itself, about to exit (callers passing argv go on)
            # The interpreter's last collection would walk the whole heap only to
            # let the process free it (~30 ms after building 226 packages).
            gc.freeze()


def _main(argv: Sequence[str] | None) -> int:
    report = Reporter()
    try:
        return run(sys.argv[1:] if argv is None else argv, report)
    except SuperminError as err:
        if report.verbosity >= 1 or os.environ.get("SUPERMIN_DEBUG"):
            traceback.print_exc()
        print(f"supermin: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        # Anything the specific errors did not foresee still gets one line, not a traceback.
        if report.verbosity >= 1:
            traceback.print_exc()
        where = f"{err.filename}: " if err.filename else ""
        print(f"supermin: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
