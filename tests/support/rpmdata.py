"""RPM package data for the supermin tests.

- real_rpms(): the 24 real packages stored in shared/testdata/rpm/real
  (SOURCES.md there says what each one covers);
- synthetic_rpms(): the feature-complete set make-rpms.sh builds, made once into
  the shared test cache (cache_root()/synthetic-rpms) and reused while the script
  is unchanged, like debdata.synthetic_debs();
- write_rpm(): a tiny writer of hand-made packages for what no real or rpmbuild
  package can cheaply show (the stripped cpio payload of packages with files of
  4 GiB or more, damaged headers);
- the reference resolvers: dnf_closure() (offline `dnf --installroot … --assumeno
  install`, the README's verified command), dnf_install() and rpm_query_installed()
  for a really populated root, solv_closure() (libsolv, shared/testdata's
  solv-resolve.py);
- write_repodata(): rpm-md metadata for packages that exist only as metadata
  (MetaPackage), to ask the resolvers questions no real package set poses.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from support.debdata import TESTDATA_ENV, cache_root, public_dir

# ------------------------------------------------------------------ stored packages


def testdata_dir() -> Path:
    """shared/testdata: $SUPERMIN_TESTDATA, else beside the checkout (symlinks followed or not)."""
    here = Path(__file__)
    candidates = [Path(env)] if (env := os.environ.get(TESTDATA_ENV)) else []
    candidates += [p.parents[2].parent / "shared" / "testdata" for p in (here.resolve(), here)]
    for candidate in candidates:
        if (candidate / "rpm" / "make-rpms.sh").is_file():
            return candidate
    raise FileNotFoundError(
        f"rpm/make-rpms.sh not found under {[str(c) for c in candidates]}; set ${TESTDATA_ENV}"
    )


def real_rpms() -> list[Path]:
    """Every stored real .rpm, sorted by name."""
    return sorted((testdata_dir() / "rpm" / "real").glob("*.rpm"))


# ------------------------------------------------------------------ synthetic set


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """flock(2) on cache_root()/locks/NAME.lock: concurrent test runs build once."""
    lock = public_dir(cache_root() / "locks") / f"{name}.lock"
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _make_world_readable(top: Path) -> None:
    # Product tests read packages as uid 65534.
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
    top.chmod(top.stat().st_mode | 0o555)


def synthetic_rpms() -> Path:
    """Run make-rpms.sh once into cache_root()/synthetic-rpms and return that directory.

    It holds repo/*.rpm (+ repodata), repo-zst/, SRPMS/*.src.rpm and MANIFEST.tsv.
    It is rebuilt when the script changes. As root the script installs what it
    needs (rpm, createrepo-c, gcc, binutils, busybox-static) with apt-get.
    """
    script = testdata_dir() / "rpm" / "make-rpms.sh"
    root = cache_root()
    out = root / "synthetic-rpms"
    marker = root / "synthetic-rpms.done"
    stamp = hashlib.sha256(script.read_bytes()).hexdigest() + "\n"
    with _locked("synthetic-rpms"):
        if out.is_dir() and marker.is_file() and marker.read_text() == stamp:
            return out
        marker.unlink(missing_ok=True)
        # make-rpms.sh wipes its OUTDIR first, so build beside it and swap in at the end.
        scratch = root / ".synthetic-rpms.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        env = {
            **os.environ,
            "LC_ALL": "C",
            # Keep the PyPI createrepo_c venv in the cache rather than in $HOME.
            "TP_CREATEREPO_VENV": str(public_dir(root / "venv-createrepo")),
        }
        proc = subprocess.run(
            ["bash", str(script), str(scratch)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"make-rpms.sh exited with status {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        _make_world_readable(scratch)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(scratch, out)
        marker.write_text(stamp)
        marker.chmod(0o644)
    return out


def synthetic_binary_rpms() -> list[Path]:
    return sorted((synthetic_rpms() / "repo").glob("*.rpm"))


def synthetic_source_rpms() -> list[Path]:
    return sorted((synthetic_rpms() / "SRPMS").glob("*.src.rpm"))


# ------------------------------------------------------------------ hand-made packages

INT16, INT32, INT64, STRING, BIN, STRING_ARRAY = 3, 4, 5, 6, 7, 8
_ALIGN = {INT16: 2, INT32: 4, INT64: 8}
_FORMATS = {INT16: "H", INT32: "I", INT64: "Q"}
HEADER_SIGNATURES, HEADER_IMMUTABLE = 62, 63

TagValue = tuple[int, int | str | bytes | Sequence[int] | Sequence[str]]


def _encode(
    kind: int, value: int | str | bytes | Sequence[int] | Sequence[str]
) -> tuple[bytes, int]:
    if kind in _FORMATS:
        numbers = [value] if isinstance(value, int) else list(value)  # type: ignore[arg-type]
        return struct.pack(f">{len(numbers)}{_FORMATS[kind]}", *numbers), len(numbers)
    if kind == STRING:
        assert isinstance(value, str)
        return value.encode() + b"\0", 1
    if kind == BIN:
        assert isinstance(value, bytes)
        return value, len(value)
    assert kind == STRING_ARRAY and not isinstance(value, str | bytes | int)
    strings = [str(item).encode("utf-8", "surrogateescape") for item in value]
    return b"".join(s + b"\0" for s in strings), len(strings)


def header_bytes(tags: Mapping[int, TagValue], *, region: int | None = HEADER_IMMUTABLE) -> bytes:
    """A header structure (magic, index, data) holding TAGS, sorted by tag number.

    REGION is the tag of the region entry and trailer that cover every entry, as
    rpmbuild writes them (HEADER_SIGNATURES for a signature header); None for none.
    """
    index: list[tuple[int, int, int, int]] = []
    data = b""
    for tag in sorted(tags):
        kind, value = tags[tag]
        data += b"\0" * (-len(data) % _ALIGN.get(kind, 1))
        blob, count = _encode(kind, value)
        index.append((tag, kind, len(data), count))
        data += blob
    if region is not None:
        count = len(index) + 1
        trailer = struct.pack(">iIiI", region, BIN, -16 * count, 16)
        index.insert(0, (region, BIN, len(data), 16))
        data += trailer
    entries = b"".join(struct.pack(">iIiI", *entry) for entry in index)
    return struct.pack(">3sB4xII", b"\x8e\xad\xe8", 1, len(index), len(data)) + entries + data


def write_rpm(path: Path, tags: Mapping[int, TagValue], payload: bytes) -> Path:
    """Write a binary package: lead, a signature header holding only the size, TAGS, PAYLOAD.

    Nothing is signed or digested, so rpm must be told --nosignature --nodigest.
    """
    main = header_bytes(tags)
    name = str(tags.get(1000, (STRING, "handmade"))[1]).encode()[:65]
    lead = struct.pack(">4sBBhh66shh16s", b"\xed\xab\xee\xdb", 3, 0, 0, 1, name, 1, 5, b"")
    signature = header_bytes({1000: (INT32, len(main) + len(payload))}, region=HEADER_SIGNATURES)
    signature += b"\0" * (-len(signature) % 8)
    path.write_bytes(lead + signature + main + payload)
    return path


def stripped_cpio(members: Sequence[tuple[int, bytes]]) -> bytes:
    """rpm's "07070X" payload: (file index, data) members, then the ffffffff trailer."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for fx, data in [*members, (0xFFFFFFFF, b"")]:
        pad()
        out += b"07070X" + f"{fx:08x}".encode()
        pad()
        out += data
    pad()
    return bytes(out)


# ------------------------------------------------------------------ reference resolvers

# dnf prints its transaction as a table; these headings open the sections of new packages.
_DNF_INSTALL_SECTIONS = ("Installing:", "Installing dependencies:", "Installing weak dependencies:")


class Unsolvable(RuntimeError):
    """A reference resolver found the job unsolvable; the message is what it printed."""


def solv_resolve_script() -> Path:
    return testdata_dir() / "rpm" / "solv-resolve.py"


def _dnf_home(work: Path) -> dict[str, str]:
    """HOME with an .rpmmacros that puts the rpmdb at <root>/var/lib/rpm (Debian: ~/.rpmdb)."""
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
    return {**os.environ, "HOME": str(home), "LC_ALL": "C.UTF-8", "COLUMNS": "200"}


def _dnf(
    repo: Path, root: Path, work: Path, args: Sequence[str], weak: bool
) -> subprocess.CompletedProcess[str]:
    """dnf, offline, against `repo` only, into `root` (the README's verified command)."""
    command = [
        "dnf",
        f"--installroot={root}",
        "--releasever=1",
        "--noplugins",
        "--setopt=reposdir=/dev/null",
        f"--setopt=cachedir={work / 'cache'}",
        f"--repofrompath=local,{repo.absolute()}",
        "--repo=local",
        "--setopt=local.gpgcheck=0",
        "--setopt=local.metadata_expire=0",
        f"--setopt=install_weak_deps={weak}",
        *args,
    ]
    return subprocess.run(
        command, env=_dnf_home(work), capture_output=True, text=True, timeout=600, check=False
    )


def parse_dnf_transaction(output: str) -> list[str]:
    """NEVRAs of the packages a dnf transaction table installs, sorted."""
    found: list[str] = []
    section = False
    carried = ""
    for line in output.splitlines():
        stripped = line.strip()
        if stripped in _DNF_INSTALL_SECTIONS:
            section = True
            continue
        if not stripped or not line.startswith(" ") or stripped.endswith(":"):
            section = section and stripped.startswith("replacing")
            continue
        if not section or stripped.startswith("replacing"):
            continue
        fields = (carried + " " + stripped).split() if carried else stripped.split()
        if len(fields) == 1:  # a long name is printed on a line of its own
            carried = fields[0]
            continue
        carried = ""
        name, arch, version = fields[:3]
        found.append(f"{name}-{version}.{arch}")
    return sorted(found)


def dnf_closure(repo: Path, roots: Sequence[str], weak: bool, work: Path) -> list[str]:
    """What `dnf install ROOTS` would install into an empty root (--assumeno), sorted."""
    work.mkdir(parents=True, exist_ok=True)
    proc = _dnf(repo, work / "root", work, ["--assumeno", "install", *roots], weak)
    if "Error:" in proc.stdout + proc.stderr:
        raise Unsolvable(proc.stdout + proc.stderr)
    found = parse_dnf_transaction(proc.stdout)
    if not found:
        raise RuntimeError(f"no dnf transaction in:\n{proc.stdout}\n{proc.stderr}")
    return found


def dnf_install(repo: Path, roots: Sequence[str], root: Path, work: Path) -> list[str]:
    """Really install ROOTS into `root` with dnf (scriptlets run there); the NEVRAs installed."""
    work.mkdir(parents=True, exist_ok=True)
    proc = _dnf(repo, root, work, ["-y", "install", *roots], weak=False)
    if proc.returncode != 0:
        raise RuntimeError(f"dnf install failed:\n{proc.stdout}\n{proc.stderr}")
    return parse_dnf_transaction(proc.stdout)


def rpm_query_installed(root: Path, work: Path) -> list[str]:
    """`rpm -qa` of `root` (database at <root>/var/lib/rpm), as NEVRAs, sorted."""
    proc = subprocess.run(
        [
            "rpm",
            "--root",
            str(root),
            "--dbpath",
            "/var/lib/rpm",
            "-qa",
            "--qf",
            "%{NAME}-%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}.%{ARCH}\\n",
        ],
        env=_dnf_home(work),
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(proc.stdout.split())


def solv_closure(repo: Path, roots: Sequence[str], weak: bool) -> list[str]:
    """What libsolv (solv-resolve.py, run by this interpreter) installs for ROOTS, sorted."""
    command = [sys.executable, str(solv_resolve_script()), "--arch", "x86_64"]
    if not weak:
        command.append("--no-weak")
    proc = subprocess.run(
        [*command, str(repo.absolute()), "--", *roots],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise Unsolvable(proc.stdout + proc.stderr)
    return sorted(proc.stdout.split())


# ------------------------------------------------------------------ hand-written repodata


@dataclass(frozen=True)
class MetaPackage:
    """A package that exists only as rpm-md metadata: enough for resolvers, nothing to install.

    Dependencies are written as rpm prints them: "name", "name >= [E:]V[-R]" or a rich
    "(a or b)". `version` is "[E:]V-R".
    """

    name: str
    version: str = "1.0-1"
    arch: str = "noarch"
    provides: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    obsoletes: tuple[str, ...] = ()
    recommends: tuple[str, ...] = ()
    supplements: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


_XML_FLAGS = {"<": "LT", "<=": "LE", "=": "EQ", ">=": "GE", ">": "GT"}


def _split_evr(evr: str) -> tuple[str, str, str | None]:
    epoch, _, rest = evr.rpartition(":") if ":" in evr else ("0", "", evr)
    version, dash, release = rest.rpartition("-")
    return (epoch or "0", version, release) if dash else (epoch or "0", rest, None)


def _entry(dependency: str) -> str:
    words = dependency.split()
    if dependency.startswith("(") or len(words) != 3:
        return f"<rpm:entry name={quoteattr(dependency)}/>"
    name, op, evr = words
    epoch, version, release = _split_evr(evr)
    rel = f" rel={quoteattr(release)}" if release else ""
    return (
        f"<rpm:entry name={quoteattr(name)} flags={quoteattr(_XML_FLAGS[op])}"
        f" epoch={quoteattr(epoch)} ver={quoteattr(version)}{rel}/>"
    )


def _package_xml(package: MetaPackage) -> str:
    epoch, version, release = _split_evr(package.version)
    pkgid = hashlib.sha256(repr(package).encode()).hexdigest()
    parts = [
        '<package type="rpm">',
        f"<name>{escape(package.name)}</name><arch>{package.arch}</arch>",
        f'<version epoch="{epoch}" ver={quoteattr(version)} rel={quoteattr(release or "")}/>',
        f'<checksum type="sha256" pkgid="YES">{pkgid}</checksum>',
        "<summary>s</summary><description>d</description>",
        f'<location href="{escape(package.name)}-{version}-{release}.{package.arch}.rpm"/>',
        f"<format><rpm:sourcerpm>{escape(package.name)}-{version}-{release}.src.rpm</rpm:sourcerpm>",
    ]
    self_provide = f"{package.name} = {package.version}"
    for kind in ("provides", "requires", "conflicts", "obsoletes", "recommends", "supplements"):
        entries = list(getattr(package, kind))
        if kind == "provides":
            entries.insert(0, self_provide)
        if entries:
            parts.append(f"<rpm:{kind}>{''.join(_entry(e) for e in entries)}</rpm:{kind}>")
    parts.extend(f"<file>{escape(path)}</file>" for path in package.files if _in_primary(path))
    parts.append("</format></package>")
    return "".join(parts)


def _in_primary(path: str) -> bool:
    return path.startswith("/etc/") or "bin/" in path


def write_repodata(directory: Path, packages: Sequence[MetaPackage]) -> Path:
    """An rpm-md repository at `directory` (gzip primary and filelists, repomd.xml)."""
    (directory / "repodata").mkdir(parents=True, exist_ok=True)
    primary = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/metadata/'
        'common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" '
        f'packages="{len(packages)}">\n'
        + "\n".join(map(_package_xml, packages))
        + "\n</metadata>\n"
    )
    lists = []
    for package in packages:
        epoch, version, release = _split_evr(package.version)
        pkgid = hashlib.sha256(repr(package).encode()).hexdigest()
        files = "".join(f"<file>{escape(path)}</file>" for path in package.files)
        lists.append(
            f'<package pkgid="{pkgid}" name={quoteattr(package.name)} arch="{package.arch}">'
            f'<version epoch="{epoch}" ver={quoteattr(version)} rel={quoteattr(release or "")}/>'
            f"{files}</package>"
        )
    filelists = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<filelists xmlns="http://linux.duke.edu/'
        f'metadata/filelists" packages="{len(packages)}">\n' + "\n".join(lists) + "\n</filelists>\n"
    )
    data = []
    for kind, text in (("primary", primary), ("filelists", filelists)):
        raw = text.encode()
        packed = gzip.compress(raw, mtime=0)
        (directory / "repodata" / f"{kind}.xml.gz").write_bytes(packed)
        data.append(
            f'<data type="{kind}"><checksum type="sha256">{hashlib.sha256(packed).hexdigest()}'
            f'</checksum><open-checksum type="sha256">{hashlib.sha256(raw).hexdigest()}'
            f'</open-checksum><location href="repodata/{kind}.xml.gz"/><timestamp>1</timestamp>'
            f"<size>{len(packed)}</size><open-size>{len(raw)}</open-size></data>"
        )
    (directory / "repodata" / "repomd.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<repomd xmlns="http://linux.duke.edu/metadata/'
        'repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm"><revision>1</revision>'
        + "".join(data)
        + "</repomd>\n"
    )
    return directory
