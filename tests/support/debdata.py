"""Debian package data for the supermin tests.

Product tests run as uid 65534 inside ``unshare -n``: that user can read neither /root
nor pytest's tmp_path (/tmp/pytest-of-root is 0700) and has no network. So every
download and every build happens here, beforehand, as the test runner's own user, into
one world-readable cache directory (cache_root()) that the unprivileged process can read.

What it provides:

- a private apt configuration that knows only Debian bookworm main: the host's apt
  sources may list unreachable third-party repositories, so they are never used;
- real .deb pools downloaded from deb.debian.org (real_pool);
- the synthetic, feature-complete set from shared/testdata (synthetic_debs);
- a builder for small one-off packages (build_deb, build_update_debs).

Results are reused across runs. A "done" marker is written last, so an interrupted run
is redone. flock(2) on files under cache_root()/locks keeps concurrent test processes
(pytest-xdist, parallel CI jobs) from racing each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

CACHE_ENV = "SUPERMIN_TEST_CACHE"
DEFAULT_CACHE = Path("/var/tmp/supermin-test-cache")
# Overrides where shared/testdata lives (normally beside the repository checkout).
TESTDATA_ENV = "SUPERMIN_TESTDATA"

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
COMPONENT = "main"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# bookworm main changes only at point releases, so a weekly refresh is plenty.
INDEX_MAX_AGE = 7 * 24 * 3600

# Fixed timestamps make the synthetic packages byte-for-byte reproducible.
SOURCE_DATE_EPOCH = 1_700_000_000
MAINTAINER = "supermin tests <tests@example.invalid>"

# "Inst NAME [OLDVERSION] (VERSION ARCHIVE [ARCH])"; OLDVERSION appears only on upgrades.
_INST_RE = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) ")


# ------------------------------------------------------------------ files and locks


def cache_root() -> Path:
    """The shared test cache: $SUPERMIN_TEST_CACHE, else /var/tmp/supermin-test-cache.

    It is created with mode 0755, as are any parents created for it, because uid 65534
    must be able to reach everything below it; an existing one gains read and search
    permission for everyone if it lacks them.
    """
    root = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).absolute()
    public_dir(root)
    _add_read(root)
    _check_traversable(root)
    return root


def public_dir(path: Path) -> Path:
    """mkdir -p PATH; every directory this call creates gets mode 0755.

    Directories that already exist are left alone: apt deliberately keeps its
    partial/ directories at 0700 for user _apt.
    """
    created = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    # mkdir(mode=...) is filtered by the umask; chmod makes the mode independent of it.
    for directory in created:
        directory.chmod(0o755)
    return path


def _check_traversable(path: Path) -> None:
    """As root, fail early if uid 65534 could not reach PATH (e.g. a cache under /root)."""
    if os.geteuid() != 0:
        return
    for directory in (path, *path.parents):
        if not directory.stat().st_mode & stat.S_IXOTH:
            raise RuntimeError(
                f"{directory} is not world-traversable, so uid 65534 cannot reach {path}; "
                f"point ${CACHE_ENV} somewhere else"
            )


def _make_world_readable(top: Path) -> None:
    """Add read permission for everyone (and search permission on directories)."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            _add_read(Path(dirpath) / name)
    _add_read(top)


def _add_read(path: Path) -> None:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return  # chmod would follow the link; the target is handled on its own
    extra = 0o555 if stat.S_ISDIR(st.st_mode) else 0o444
    mode = stat.S_IMODE(st.st_mode)
    if mode | extra != mode:
        path.chmod(mode | extra)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_if_changed(path: Path, data: bytes) -> None:
    # Rewriting unchanged files would bump mtimes that apt uses to validate its caches.
    if not (path.is_file() and path.read_bytes() == data):
        _write_atomic(path, data)


@contextlib.contextmanager
def _locked(name: str, *, shared: bool = False) -> Iterator[None]:
    """Hold flock(2) on cache_root()/locks/NAME.lock for the duration of the block.

    The lock goes away when the file is closed, so a killed test process can never
    leave a stale lock behind (unlike lock files that are created and deleted).
    """
    lock = public_dir(cache_root() / "locks") / f"{name}.lock"
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


def _run(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess[str]:
    """Run CMD capturing its output; on failure raise with the output attached."""
    proc = subprocess.run(
        list(cmd),
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(cmd)} exited with status {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------ private apt


@functools.cache
def host_arch() -> str:
    """dpkg's native architecture (amd64 on CI), rather than a hard-coded name."""
    return _run(["dpkg", "--print-architecture"]).stdout.strip()


def _apt_settings(apt: Path) -> dict[str, str]:
    return {
        # apt reads APT_CONFIG before apt.conf.d, so these two keep the host's
        # configuration out: docker-clean and appstream Post-Invoke hooks, DEP-11
        # index targets, GzipIndexes. As -o options they are no-ops (apt has already
        # read apt.conf.d by then) but they do no harm.
        "Dir::Etc::main": "/dev/null",
        "Dir::Etc::Parts": "/dev/null",
        "Dir::Etc::SourceList": str(apt / "sources.list"),
        "Dir::Etc::SourceParts": "-",
        # Host pins (e.g. nodejs) must not matter. "-" here makes apt warn
        # "Unable to read /etc/apt/-/"; /dev/null is quiet.
        "Dir::Etc::Preferences": str(apt / "preferences"),
        "Dir::Etc::PreferencesParts": "/dev/null",
        "Dir::State": str(apt / "state"),
        "Dir::State::Lists": str(apt / "lists"),
        "Dir::State::status": str(apt / "status"),
        "Dir::Cache": str(apt / "cache"),
        "Dir::Cache::archives": str(apt / "archives"),
        # Keep the Packages file uncompressed so tests (and the product) can read it.
        "Acquire::GzipIndexes": "false",
        "Acquire::Languages": "none",
        "Acquire::Retries": "3",
        # Our own flock serialises apt; apt's locks would need root-owned lock files.
        "Debug::NoLocking": "1",
        "APT::Architecture": host_arch(),
        # Ignore dpkg's foreign architectures: one architecture, one Packages file.
        "APT::Architectures": host_arch(),
    }


def _apt_dir() -> Path:
    """Create the private apt tree under cache_root()/apt (idempotent) and return it."""
    apt = public_dir(cache_root() / "apt")
    # apt creates lists/partial only below Dir::State, and ours is elsewhere.
    for sub in ("lists/partial", "state", "cache", "archives/partial"):
        public_dir(apt / sub)
    signed_by = f"[signed-by={KEYRING}] " if KEYRING.is_file() else ""
    _write_if_changed(
        apt / "sources.list", f"deb {signed_by}{MIRROR} {SUITE} {COMPONENT}\n".encode()
    )
    settings = _apt_settings(apt)
    conf = "".join(f'{key} "{value}";\n' for key, value in settings.items())
    _write_if_changed(apt / "apt.conf", conf.encode())
    # An empty dpkg status: apt resolves as if installing into an empty system.
    _write_if_changed(apt / "status", b"")
    _write_if_changed(apt / "preferences", b"")
    return apt


def apt_options() -> list[str]:
    """The ``-o KEY=VALUE`` options that point apt-get at the private configuration.

    They are enough for resolving and downloading. For full isolation from the host's
    apt.conf.d also set APT_CONFIG, as apt_env() does.
    """
    settings = _apt_settings(_apt_dir())
    return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]


def apt_env() -> dict[str, str]:
    """os.environ plus APT_CONFIG (the private apt.conf), a C locale and no prompts."""
    return {
        **os.environ,
        "APT_CONFIG": str(_apt_dir() / "apt.conf"),
        "LC_ALL": "C",
        "DEBIAN_FRONTEND": "noninteractive",
    }


def _apt_get(args: Sequence[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return _run(["apt-get", *apt_options(), *args], cwd=cwd, env=apt_env())


def _index_name() -> str:
    # apt's URItoFileName: drop the scheme, turn "/" into "_".
    site = MIRROR.split("://", 1)[1].rstrip("/").replace("/", "_")
    return f"{site}_dists_{SUITE}_{COMPONENT}_binary-{host_arch()}_Packages"


def debian_index() -> Path:
    """The uncompressed bookworm main Packages file, refreshed if older than 7 days.

    Freshness is tracked by our own stamp file: apt gives list files the server's
    Last-Modified time and leaves them alone when nothing changed, so their mtime says
    nothing about when we last checked. A failed refresh falls back to the old index.
    """
    apt = _apt_dir()
    index = apt / "lists" / _index_name()
    stamp = apt / "last-update"
    with _locked("apt"):
        if index.is_file() and _age(stamp) < INDEX_MAX_AGE:
            return index
        try:
            _update_lists()
        except RuntimeError as err:
            if not index.is_file():
                raise
            warnings.warn(f"keeping the old Debian index: {err}", stacklevel=2)
            return index
        if not index.is_file():
            raise RuntimeError(f"apt-get update succeeded but wrote no {index}")
        index.chmod(0o644)
        _write_atomic(stamp, f"{time.time()}\n".encode())
    return index


def _update_lists() -> None:
    # apt-get update exits 0 when a download fails ("W: Failed to fetch ...") and
    # keeps the old lists; Error-Mode=any (apt >= 2.6) turns that into exit status 100.
    proc = _apt_get(["-o", "APT::Update::Error-Mode=any", "update"])
    if "Failed to fetch" in proc.stderr:  # for apt versions without Error-Mode
        raise RuntimeError(f"apt-get update could not fetch everything:\n{proc.stderr}")


def apt_closure(roots: Sequence[str]) -> dict[str, str]:
    """Package name -> version for everything apt would install into an empty system.

    Recommends are not followed (--no-install-recommends).
    """
    if not roots:
        return {}
    debian_index()
    # Shared: simulations may run side by side, but not during an update.
    with _locked("apt", shared=True):
        out = _apt_get(["-s", "install", "--no-install-recommends", *roots]).stdout
    closure: dict[str, str] = {}
    for line in out.splitlines():
        match = _INST_RE.match(line)
        if match:
            closure[match[1].split(":", 1)[0]] = match[2]
    return closure


def apt_simulate(roots: Sequence[str]) -> set[str]:
    """Names of the packages apt would install for ROOTS into an empty system."""
    return set(apt_closure(roots))


def required_roots() -> list[str]:
    """Every `Priority: required` package of the index (ARCH or all), plus dpkg and bash.

    The roots of a Debian base system, as debootstrap's --variant=minbase would pick them.
    """
    from debian.deb822 import Packages

    with debian_index().open() as index:
        required = {
            p["Package"]
            for p in Packages.iter_paragraphs(index, use_apt_pkg=False)
            if p.get("Priority") == "required" and p.get("Architecture") in (host_arch(), "all")
        }
    return sorted(required | {"dpkg", "bash"})


# ------------------------------------------------------------------ real pools


def real_pool(roots: Sequence[str]) -> Path:
    """cache_root()/pools/<sorted roots joined by '+'>/ holding the closure's .deb files.

    The pool matches the current debian_index(): after an index refresh the closure is
    recomputed, new versions are downloaded and superseded files removed.
    """
    key = "+".join(sorted(set(roots)))
    if not key:
        raise ValueError("real_pool needs at least one root package")
    if len(key) > 200:  # a file name holds at most 255 bytes
        key = f"{key[:180]}+{_short_hash(key)}"
    pools = public_dir(cache_root() / "pools")
    pool = pools / key
    marker = pools / f"{key}.done"
    with _locked(f"pool-{_short_hash(key)}"):
        index = debian_index()
        st = index.stat()
        stamp = f"{index.name} {st.st_size} {st.st_mtime_ns}\n"
        if pool.is_dir() and marker.is_file() and marker.read_text() == stamp:
            return pool
        marker.unlink(missing_ok=True)
        public_dir(pool)
        _sync_pool(pool, apt_closure(roots))
        _write_atomic(marker, stamp.encode())
    return pool


def _pool_contents(pool: Path) -> dict[tuple[str, str], Path]:
    """(name, version) -> file, from apt's NAME_VERSION_ARCH.deb names (":" as "%3a")."""
    contents: dict[tuple[str, str], Path] = {}
    for deb in pool.glob("*.deb"):
        parts = deb.name.removesuffix(".deb").split("_")
        if len(parts) == 3:
            contents[(parts[0], urllib.parse.unquote(parts[1]))] = deb
    return contents


def _sync_pool(pool: Path, wanted: Mapping[str, str]) -> None:
    want = set(wanted.items())
    have = _pool_contents(pool)
    for key, deb in have.items():
        if key not in want:
            deb.unlink()  # superseded by a newer index
    missing = sorted(want - have.keys())
    if missing:
        _download(pool, missing)
    got = _pool_contents(pool)
    lost = want - got.keys()
    if lost:
        raise RuntimeError(f"apt-get download did not deliver {sorted(lost)} into {pool}")
    for deb in got.values():
        deb.chmod(0o644)


def _download(pool: Path, packages: Sequence[tuple[str, str]]) -> None:
    """apt-get download NAME=VERSION... into a scratch directory, then move into POOL.

    Only complete, hash-checked files reach the pool: apt-get must succeed first.
    """
    scratch = pool.parent / f".{pool.name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)  # left over from an interrupted run
    public_dir(scratch)
    _hand_to_apt_user(scratch)
    try:
        with _locked("apt", shared=True):
            _apt_get(
                ["download", *(f"{name}={version}" for name, version in packages)], cwd=scratch
            )
        for deb in scratch.glob("*.deb"):
            if os.geteuid() == 0:
                os.chown(deb, 0, 0)
            deb.chmod(0o644)
            os.replace(deb, pool / deb.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _hand_to_apt_user(directory: Path) -> None:
    """Let user _apt write DIRECTORY.

    As root, apt-get download fetches as the sandbox user _apt. If _apt cannot write
    the target directory apt still works, but runs unsandboxed and prints a
    "Download is performed unsandboxed as root" warning.
    """
    if os.geteuid() != 0:
        return
    try:
        apt_uid = pwd.getpwnam("_apt").pw_uid
    except KeyError:
        return
    os.chown(directory, apt_uid, -1)


# ------------------------------------------------------------------ a real kernel


def kernel_deb() -> Path:
    """The real linux-image-<abi>-ARCH .deb that linux-image-ARCH depends on, alone.

    Booting it with `qemu -kernel` needs none of its dependencies (initramfs-tools,
    kmod, udev...), so only this one package is downloaded, into its own pool.
    """
    meta = f"linux-image-{host_arch()}"
    closure = apt_closure([meta])
    images = [n for n in closure if n.startswith("linux-image-") and n != meta]
    if len(images) != 1:
        raise RuntimeError(f"{meta} should pull in one kernel image package, not {images}")
    name = images[0]
    pool = public_dir(cache_root() / "pools" / "kernel-only")
    with _locked("pool-kernel-only"):
        _sync_pool(pool, {name: closure[name]})
    return _pool_contents(pool)[(name, closure[name])]


@functools.cache
def kernel_files() -> Path:
    """A directory holding `vmlinuz` and `config` (its /boot/config-*) from kernel_deb().

    Extracted once per kernel version into the cache, world-readable, by streaming
    the package's data.tar until both are found.
    """
    deb = kernel_deb()
    out = public_dir(cache_root() / "kernels") / deb.stem
    with _locked("kernels"):
        if (out / "vmlinuz").is_file() and (out / "config").is_file():
            return out
        public_dir(out)
        wanted = {"vmlinuz": "./boot/vmlinuz-", "config": "./boot/config-"}
        with subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE
        ) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    for key, prefix in list(wanted.items()):
                        if member.isfile() and member.name.startswith(prefix):
                            source = tar.extractfile(member)
                            assert source is not None
                            _write_atomic(out / key, source.read())
                            del wanted[key]
                    if not wanted:
                        break
            proc.kill()
        if wanted:
            raise RuntimeError(f"{deb.name} has no {sorted(wanted.values())}")
    return out


@functools.cache
def kernel_modules() -> Path:
    """/lib/modules/VERSION of kernel_deb(), extracted once into the cache, world-readable.

    The package ships no modules.dep (depmod runs in its postinst): this is the tree
    exactly as the .deb holds it, for $SUPERMIN_MODULES.
    """
    deb = kernel_deb()
    top = public_dir(cache_root() / "kernels") / deb.stem
    done = top / "modules.done"
    with _locked("kernels"):
        found = sorted((top / "modules").glob("lib/modules/*"))
        if done.is_file() and len(found) == 1:
            return found[0]
        scratch = top / ".modules.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(top / "modules", ignore_errors=True)
        public_dir(scratch)
        with subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE
        ) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    if member.name.startswith("./lib/modules/") and (
                        member.isfile() or member.isdir()
                    ):
                        tar.extract(member, scratch)  # regular files and directories only
        _make_world_readable(scratch)
        os.replace(scratch, top / "modules")
        _write_atomic(done, b"")
        found = sorted((top / "modules").glob("lib/modules/*"))
    if len(found) != 1:
        raise RuntimeError(f"{deb.name} holds {len(found)} module trees, not one")
    return found[0]


# ------------------------------------------------------------------ synthetic set


def _testdata_candidates() -> list[Path]:
    """Where shared/testdata may be: $SUPERMIN_TESTDATA, else beside the checkout.

    The checkout root is two levels above this file (tests/support/debdata.py). Both
    the symlink-resolved path and the path as imported are tried, because a checkout
    reached through a symlink has two different "beside"s.
    """
    here = Path(__file__)
    candidates = [Path(env)] if (env := os.environ.get(TESTDATA_ENV)) else []
    for path in (here.resolve(), here.absolute()):
        candidates.append(path.parents[2].parent / "shared" / "testdata")
    return list(dict.fromkeys(candidates))


def make_debs_script() -> Path:
    """Path of shared/testdata/deb/make-debs.sh."""
    candidates = _testdata_candidates()
    for base in candidates:
        script = base / "deb" / "make-debs.sh"
        if script.is_file():
            return script
    raise FileNotFoundError(
        f"deb/make-debs.sh not found under {[str(c) for c in candidates]}; set ${TESTDATA_ENV}"
    )


def synthetic_debs() -> Path:
    """Run make-debs.sh once into cache_root()/synthetic-debs and return that directory.

    It holds pool/*.deb, Packages{,.gz,.xz}, Packages.ftparchive, Release and
    MANIFEST.tsv (a flat repository). It is rebuilt when the script changes.
    """
    script = make_debs_script()
    root = cache_root()
    out = root / "synthetic-debs"
    marker = root / "synthetic-debs.done"
    stamp = hashlib.sha256(script.read_bytes()).hexdigest() + "\n"
    with _locked("synthetic-debs"):
        if out.is_dir() and marker.is_file() and marker.read_text() == stamp:
            return out
        marker.unlink(missing_ok=True)
        # make-debs.sh wipes its OUTDIR first, so build beside it and swap in at the end.
        scratch = root / ".synthetic-debs.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        _run(["bash", str(script), str(scratch)])
        _make_world_readable(scratch)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(scratch, out)
        _write_atomic(marker, stamp.encode())
    return out


# ------------------------------------------------------------------ small packages


def _relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path.lstrip("/"))
    if not rel.parts or ".." in rel.parts or rel.parts[0] == "DEBIAN":
        raise ValueError(f"bad package path {path!r}")
    return rel


def _control(fields: Mapping[str, str], name: str) -> str:
    lines = [f"{key}: {value}" for key, value in fields.items() if value]
    lines.append(f"Description: {name} test package")
    lines.append(" Synthetic package built by tests/support/debdata.py.")
    return "\n".join(lines) + "\n"


def build_deb(
    outdir: Path,
    name: str,
    version: str,
    *,
    depends: str = "",
    pre_depends: str = "",
    provides: str = "",
    files: Mapping[str, bytes] | None = None,
    scripts: Mapping[str, str] | None = None,
    arch: str = "all",
    modes: Mapping[str, int] | None = None,
    compression: str = "xz",
) -> Path:
    """Build OUTDIR/NAME_VERSION_ARCH.deb (epoch dropped from the file name).

    FILES maps absolute paths to contents (mode 0644 unless MODES says otherwise);
    SCRIPTS maps maintainer script names (preinst, postinst, ...) to their text.
    Files are owned by root:root (--root-owner-group), mtimes are fixed and md5sums is
    included, as in a real package.
    """
    files = files or {}
    modes = modes or {}
    with tempfile.TemporaryDirectory(prefix="build-deb-") as tmp:
        tree = Path(tmp) / "tree"
        installed_kib = 0
        for path, data in files.items():
            target = tree / _relative(path)
            public_dir(target.parent)
            target.write_bytes(data)
            target.chmod(modes.get(path, 0o644))
            installed_kib += (len(data) + 1023) // 1024
        control_dir = public_dir(tree / "DEBIAN")
        fields = {
            "Package": name,
            "Version": version,
            "Architecture": arch,
            "Maintainer": MAINTAINER,
            "Installed-Size": str(max(installed_kib, 1)),
            "Pre-Depends": pre_depends,
            "Depends": depends,
            "Provides": provides,
        }
        (control_dir / "control").write_text(_control(fields, name))
        md5sums = "".join(
            f"{hashlib.md5(data).hexdigest()}  {_relative(path)}\n"
            for path, data in sorted(files.items(), key=lambda item: str(_relative(item[0])))
        )
        if md5sums:
            (control_dir / "md5sums").write_text(md5sums)
        for script_name, text in (scripts or {}).items():
            script = control_dir / script_name
            script.write_text(text)
            script.chmod(0o755)
        for entry in [tree, *tree.rglob("*")]:
            os.utime(entry, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH), follow_symlinks=False)
        public_dir(outdir)
        deb = outdir / f"{name}_{version.split(':', 1)[-1]}_{arch}.deb"
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "LC_ALL": "C"}
        _run(
            ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(tree), str(deb)],
            env=env,
        )
    deb.chmod(0o644)
    return deb


# Version -> directory holding data.txt: 1.1 moves it from /lib to /usr/lib (usrmerge).
_UPDATE_DATA_DIR = {"1.0": "/lib/tp-update", "1.1": "/usr/lib/tp-update"}


def build_update_debs(outdir: Path, version: str) -> Path:
    """Build tp-update VERSION ("1.0" or "1.1") into OUTDIR for upgrade tests.

    1.0 ships /lib/tp-update/data.txt, 1.1 ships /usr/lib/tp-update/data.txt instead;
    both ship /usr/share/doc/tp-update/README. The postinst appends a line naming the
    version to /var/lib/tp/update.log, so a test can tell which scripts ran.
    """
    try:
        data_dir = _UPDATE_DATA_DIR[version]
    except KeyError:
        raise ValueError(f"tp-update exists in versions {sorted(_UPDATE_DATA_DIR)}") from None
    postinst = (
        "#!/bin/sh\n"
        "set -e\n"
        "mkdir -p /var/lib/tp\n"
        f'echo "tp-update {version} postinst $*" >> /var/lib/tp/update.log\n'
    )
    return build_deb(
        outdir,
        "tp-update",
        version,
        files={
            f"{data_dir}/data.txt": f"data {version}\n".encode(),
            "/usr/share/doc/tp-update/README": b"tp-update: a package that moves a file\n",
        },
        scripts={"postinst": postinst},
    )


def write_flat_index(pool: Path) -> Path:
    """Write POOL/Packages with dpkg-scanpackages, making POOL a flat repository."""
    out = _run(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=pool).stdout
    index = pool / "Packages"
    _write_atomic(index, out.encode())
    return index
