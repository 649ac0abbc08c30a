"""backends/rpm: every real and synthetic .rpm read the way rpm itself reads it.

References, all from Debian 12's rpm 4.18: `rpm -qp --dump` (file metadata and
digests), `rpm -qp --filecaps/--configfiles` and FILEFLAGS (%ghost),
`rpm2cpio | cpio -idm` (contents, symlinks, hardlinks), `rpm -qp --scripts
/--triggers/--filetriggers` (byte for byte) and `rpm -qp --requires/--provides/...`.
A hand-made package with rpm's stripped "07070X" payload is judged by `rpm -i`.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import random
import re
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard
from support.debdata import build_deb
from support.rpmdata import (
    INT16,
    INT32,
    INT64,
    STRING,
    STRING_ARRAY,
    TagValue,
    real_rpms,
    stripped_cpio,
    synthetic_binary_rpms,
    synthetic_source_rpms,
    write_rpm,
)

from supermin.backends.rpm.archive import (
    STATIC_GIDS,
    STATIC_UIDS,
    RpmContents,
    read_rpm,
    read_rpm_header,
)
from supermin.backends.rpm.header import read_headers
from supermin.content import read_content
from supermin.entry import EntryKind, FileEntry
from supermin.errors import ArchiveError
from supermin.spool import Spool

REAL = real_rpms()
DEPENDENCY_KINDS = (
    "provides",
    "requires",
    "conflicts",
    "obsoletes",
    "recommends",
    "suggests",
    "supplements",
    "enhances",
)
# path size mtime digest mode owner group isconfig isdoc rdev symlink
_DUMP = re.compile(
    rb"^(.*?) (\d+) (\d+) ([0-9a-f]+) (0[0-7]+) (\S+) (\S+) ([01]) ([01]) (\d+) (.*)$"
)
_DIGEST_BY_LENGTH = {32: "md5", 40: "sha1", 56: "sha224", 64: "sha256", 96: "sha384", 128: "sha512"}


# ------------------------------------------------------------------ reading, once per package

Reader = Callable[[Path], RpmContents]


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> Reader:
    spool = Spool(tmp_path_factory.mktemp("spool"))
    cache: dict[Path, RpmContents] = {}

    def read(package: Path) -> RpmContents:
        if package not in cache:
            cache[package] = read_rpm(package, spool, origin=package.name)
        return cache[package]

    return read


# ------------------------------------------------------------------ what rpm says


def _query(package: Path, *args: str) -> bytes:
    return subprocess.run(
        ["rpm", "-qp", *args, str(package)], capture_output=True, check=True
    ).stdout


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _image(raw: bytes) -> str:
    # rpm prints the files of a source package without a leading "/".
    name = _text(raw)
    return name if name.startswith("/") else "/" + name


def _per_file(package: Path, query: str) -> dict[str, str]:
    """path -> value for a '[%{FILENAMES}\\t...\\n]' style query."""
    lines = _query(package, "--qf", f"[%{{FILENAMES}}\\t{query}\\n]").splitlines()
    return {_image(n): _text(v) for n, _, v in (line.partition(b"\t") for line in lines)}


def _sha(entry: FileEntry, entries: dict[str, FileEntry], algo: str = "sha256") -> str:
    source = entries[entry.target or ""] if entry.kind is EntryKind.HARDLINK else entry
    assert source.content is not None
    return hashlib.new(algo, read_content(source)).hexdigest()


# ------------------------------------------------------------------ comparisons


def entry_problems(package: Path, contents: RpmContents) -> list[str]:
    """Our entries against `rpm -qp --dump`, FILEFLAGS, --filecaps and --configfiles."""
    problems: list[str] = []
    ours = {str(e.path): e for e in contents.entries}
    ghosts = {
        path for path, flags in _per_file(package, "%{FILEFLAGS:fflags}").items() if "g" in flags
    }
    seen: set[str] = set()
    for line in _query(package, "--dump").splitlines():
        if line == b"(contains no files)":
            continue
        match = _DUMP.match(line)
        assert match, line
        path, mode = _image(match[1]), int(match[5], 8)
        if path in ghosts and not stat.S_ISDIR(mode):
            if path in ours or path not in contents.ghosts:
                problems.append(f"{path}: %ghost file must be listed as a ghost, not an entry")
            continue
        entry = ours.get(path)
        if entry is None:
            problems.append(f"{path}: in rpm --dump but not read")
            continue
        seen.add(path)
        user, group = _text(match[6]), _text(match[7])
        wanted = {
            "st_mode": mode,
            "user": user,
            "group": group,
            "uid": STATIC_UIDS.get(user, 0),
            "gid": STATIC_GIDS.get(group, 0),
            "mtime": int(match[3]),
            "origin": package.name,
        }
        got = {key: getattr(entry, key) for key in wanted}
        if got != wanted:
            problems.append(f"{path}: {got} != rpm's {wanted}")
        if entry.kind in (EntryKind.FILE, EntryKind.HARDLINK):
            algo = _DIGEST_BY_LENGTH[len(match[4])]
            if _sha(entry, ours, algo) != match[4].decode():
                problems.append(f"{path}: content does not match rpm's {algo} digest")
            size = entry.size if entry.kind is EntryKind.FILE else ours[entry.target or ""].size
            if size != int(match[2]):
                problems.append(f"{path}: size {size} != {int(match[2])}")
        if entry.kind is EntryKind.SYMLINK and entry.target != _text(match[11]):
            problems.append(f"{path}: symlink to {entry.target!r}, rpm says {match[11]!r}")
        if entry.kind in (EntryKind.CHAR, EntryKind.BLOCK) and os.makedev(*entry.rdev) != int(
            match[10]
        ):
            problems.append(f"{path}: rdev {entry.rdev} != {int(match[10])}")
    problems += [f"{path}: read but not in rpm --dump" for path in sorted(ours.keys() - seen)]

    # rpm's own --filecaps query: the caps, or nothing.
    caps = _per_file(package, "%|FILECAPS?{%{FILECAPS}}|")
    caps = {path: value for path, value in caps.items() if value}
    if caps != contents.capabilities:
        problems.append(f"capabilities {contents.capabilities} != rpm's {caps}")
    config = {_image(line) for line in _query(package, "--configfiles").splitlines()}
    config -= {"/(contains no files)"}
    if set(contents.conffiles) != config & seen:
        problems.append(f"conffiles {contents.conffiles} != rpm's {sorted(config & seen)}")
    return problems


def _extract_with_cpio(package: Path, dest: Path) -> None:
    dest.mkdir()
    with subprocess.Popen(["rpm2cpio", str(package)], stdout=subprocess.PIPE) as rpm2cpio:
        subprocess.run(
            ["cpio", "-idm", "--no-absolute-filenames", "--quiet"],
            stdin=rpm2cpio.stdout,
            cwd=dest,
            check=True,
        )
    assert rpm2cpio.returncode == 0


def tree_problems(contents: RpmContents, root: Path) -> list[str]:
    """Our entries against a tree that rpm2cpio | cpio or rpm -i extracted."""
    problems: list[str] = []
    ours = {str(e.path): e for e in contents.entries}
    for path, entry in ours.items():
        there = root / path.lstrip("/")
        regular = entry.kind in (EntryKind.FILE, EntryKind.HARDLINK)
        if regular and hashlib.sha256(there.read_bytes()).hexdigest() != _sha(entry, ours):
            problems.append(f"{path}: content differs from the extracted file")
        if entry.kind is EntryKind.HARDLINK:
            target = root / (entry.target or "").lstrip("/")
            if there.stat().st_ino != target.stat().st_ino:
                problems.append(f"{path}: extracted as another inode than {entry.target}")
        if entry.kind is EntryKind.SYMLINK and os.readlink(there) != entry.target:
            problems.append(f"{path}: extracted link says {os.readlink(there)!r}")
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:  # every extracted non-directory must be one of ours
            path = "/" + str((Path(dirpath) / name).relative_to(root))
            if path not in ours and not path.startswith("/var/lib/rpm"):
                problems.append(f"{path}: extracted but not read")
    return problems


_SCRIPT_LABELS = {
    "pretrans": "pretrans",
    "pre": "preinstall",
    "post": "postinstall",
    "preun": "preuninstall",
    "postun": "postuninstall",
    "posttrans": "posttrans",
    "verify": "verify",
}
_TRIGGER_PREFIX = {"package": "trigger", "file": "filetrigger", "transfile": "transfiletrigger"}


def render_scripts(contents: RpmContents) -> bytes:
    """Our scriptlets in the format of rpm 4.18's --scripts query."""
    out = b""
    by_kind = {s.kind: s for s in contents.scriptlets}
    for kind, label in _SCRIPT_LABELS.items():
        script = by_kind.get(kind)
        if script is None:
            continue
        program = "".join(f" {word}" for word in script.program).encode()
        if script.body is not None:
            using = b" (using" + program + b")" if script.program else b""
            out += f"{label} scriptlet".encode() + using + b":\n" + script.body + b"\n"
        else:
            out += f"{label} program:".encode() + program + b"\n"
    return out


def render_triggers(contents: RpmContents, scopes: set[str]) -> bytes:
    """Our triggers in the format of rpm's --triggers / --filetriggers queries."""
    out = b""
    for trigger in contents.triggers:
        if trigger.scope in scopes:
            conditions = ", ".join(str(c) for c in trigger.conditions)
            out += (
                f"{_TRIGGER_PREFIX[trigger.scope]}{trigger.kind} scriptlet"
                f" (using {' '.join(trigger.program)}) -- {conditions}\n"
            ).encode()
            out += trigger.body + b"\n"
    return out


def script_problems(package: Path, contents: RpmContents) -> list[str]:
    problems = []
    for option, ours in (
        ("--scripts", render_scripts(contents)),
        ("--triggers", render_triggers(contents, {"package"})),
        ("--filetriggers", render_triggers(contents, {"file", "transfile"})),
    ):
        theirs = _query(package, option)
        if ours != theirs:
            problems.append(f"{option}: ours {ours!r}\n  rpm's {theirs!r}")
    return problems


def dependency_problems(package: Path, contents: RpmContents) -> list[str]:
    problems = []
    for kind in DEPENDENCY_KINDS:
        theirs = _query(package, f"--{kind}").decode("utf-8", "replace").splitlines()
        ours = [str(dep) for dep in getattr(contents.header, kind)]
        if ours != theirs:
            problems.append(f"{kind}: ours {ours}, rpm's {theirs}")
    return problems


def header_problems(package: Path, contents: RpmContents) -> list[str]:
    fields = (
        "%{NAME}\n%{EPOCH}\n%{VERSION}\n%{RELEASE}\n%{ARCH}\n%{SOURCERPM}\n%{PAYLOADCOMPRESSOR}"
    )
    name, epoch, version, release, arch, source, compressor = (
        _query(package, "--qf", fields).decode().split("\n")
    )
    header = contents.header
    theirs = (
        name,
        None if epoch == "(none)" else int(epoch),
        version,
        release,
        arch,
        None if source == "(none)" else source,
        "none" if compressor == "(none)" else compressor,
    )
    ours = (
        header.name,
        header.epoch,
        header.version,
        header.release,
        header.arch,
        header.source_rpm,
        contents.payload_compressor,
    )
    problems = [f"header {ours} != rpm's {theirs}"] if ours != theirs else []
    if read_rpm_header(package) != header:
        problems.append("read_rpm_header() differs from read_rpm().header")
    files = {_image(p) for p in _query(package, "--qf", "[%{FILENAMES}\\n]").splitlines()}
    if {_image(p.encode("utf-8", "surrogateescape")) for p in header.files} != files:
        problems.append("header.files differs from rpm's file list")
    return problems


# ------------------------------------------------------------------ the real packages


def test_all_real_packages_are_here() -> None:
    assert len(REAL) == 24
    assert any(p.name.endswith(".src.rpm") for p in REAL)


@pytest.mark.parametrize("package", REAL, ids=lambda p: p.name)
def test_entries_match_rpm_dump(package: Path, opened: Reader) -> None:
    problems = entry_problems(package, opened(package))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", REAL, ids=lambda p: p.name)
def test_contents_match_rpm2cpio(package: Path, opened: Reader, tmp_path: Path) -> None:
    _extract_with_cpio(package, tmp_path / "x")
    problems = tree_problems(opened(package), tmp_path / "x")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", REAL, ids=lambda p: p.name)
def test_scriptlets_match_rpm(package: Path, opened: Reader) -> None:
    problems = script_problems(package, opened(package))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", REAL, ids=lambda p: p.name)
def test_dependencies_match_rpm(package: Path, opened: Reader) -> None:
    problems = dependency_problems(package, opened(package))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", REAL, ids=lambda p: p.name)
def test_header_matches_rpm(package: Path, opened: Reader) -> None:
    problems = header_problems(package, opened(package))
    assert not problems, "\n".join(problems)


def test_real_payload_compressors(opened: Reader) -> None:
    found = {opened(p).payload_compressor for p in REAL}
    assert found == {"zstd", "xz", "lzma", "gzip", "none"}


def _real(name: str) -> Path:
    return next(p for p in REAL if p.name.startswith(name))


def test_hardlink_sets_share_one_content(opened: Reader) -> None:
    entries = {str(e.path): e for e in opened(_real("hlinktest")).entries}
    kinds = {path: (e.kind, e.target) for path, e in entries.items()}
    assert kinds == {
        "/foo": (EntryKind.DIR, None),
        "/foo/aaaa": (EntryKind.FILE, None),
        "/foo/zzzz": (EntryKind.HARDLINK, "/foo/aaaa"),
        "/foo/copyllo": (EntryKind.FILE, None),
        "/foo/hello": (EntryKind.FILE, None),
        "/foo/hello-bar": (EntryKind.HARDLINK, "/foo/hello"),
        "/foo/hello-foo": (EntryKind.HARDLINK, "/foo/hello"),
        "/foo/hello-world": (EntryKind.HARDLINK, "/foo/hello"),
    }
    for entry in entries.values():
        if entry.kind is EntryKind.HARDLINK:
            leader = entries[entry.target or ""]
            assert entry.content is None and entry.size == 0
            assert (entry.mode, entry.user, entry.mtime) == (leader.mode, leader.user, leader.mtime)
            assert leader.content is not None and leader.size == 29


def test_ghosts_and_config(opened: Reader) -> None:
    ngircd = opened(_real("ngircd"))
    assert ngircd.ghosts == ("/etc/ngircd.motd",)
    assert "/etc/ngircd.motd" not in {str(e.path) for e in ngircd.entries}
    assert set(ngircd.conffiles) == {"/etc/ngircd.conf", "/etc/pam.d/ngircd"}
    runtime = opened(_real("nodejs010-runtime"))
    assert runtime.ghosts == ()  # its two %ghost directories are entries
    assert sum(e.kind is EntryKind.DIR for e in runtime.entries) == 14511


def test_first_install_scripts_are_rpms_calls(opened: Reader) -> None:
    sendmail = opened(_real("sendmail"))
    scripts = sendmail.scripts
    assert [(s.phase, s.stage, s.arguments) for s in scripts] == [
        ("pre", 1, ("1",)),
        ("post", 1, ("1",)),
        ("posttrans", 2, ("1",)),
    ]
    assert {s.interpreter for s in scripts} == {"/bin/sh"}
    assert {s.kind for s in sendmail.scriptlets} >= {"preun", "postun", "verify"}
    contents = sendmail.package_contents()
    assert contents.scripts == scripts and contents.entries == sendmail.entries
    lua = opened(_real("luafork")).scripts
    assert [(s.phase, s.interpreter) for s in lua] == [("pre", "<lua>")]
    # hello's scriptlets are "-p /bin/sh" with no body: rpm runs the program alone.
    hello = opened(_real("hello-1.0"))
    assert {(s.kind, s.body) for s in hello.scriptlets} == {
        (kind, None) for kind in ("pre", "post", "preun", "postun")
    }
    assert {(s.body, s.arguments, s.interpreter) for s in hello.scripts} == {(b"", (), "/bin/sh")}


def test_epoch_and_source_package(opened: Reader) -> None:
    assert read_rpm_header(_real("xrootd-devel")).nevra == "xrootd-devel-1:5.5.4-1.fc37.x86_64"
    source = read_rpm_header(_real("nodejs010-1-7"))
    assert source.is_source and source.nevra == "nodejs010-1-7.el6_4.src"
    paths = {str(e.path) for e in opened(_real("nodejs010-1-7")).entries}
    assert "/nodejs010.spec" in paths


# ------------------------------------------------------------------ the synthetic set


@pytest.fixture(scope="module")
def synthetic() -> list[Path]:
    return synthetic_binary_rpms() + synthetic_source_rpms()


def test_synthetic_set_matches_rpm(synthetic: list[Path], opened: Reader, tmp_path: Path) -> None:
    assert len(synthetic) >= 40
    problems = []
    for number, package in enumerate(synthetic):
        contents = opened(package)
        _extract_with_cpio(package, tmp_path / str(number))
        found = entry_problems(package, contents)
        found += tree_problems(contents, tmp_path / str(number))
        found += script_problems(package, contents)
        found += dependency_problems(package, contents)
        found += header_problems(package, contents)
        problems += [f"{package.name}: {problem}" for problem in found]
    assert not problems, "\n".join(problems)


def _synthetic(synthetic: list[Path], name: str) -> Path:
    return next(p for p in synthetic if p.name.startswith(name + "-") and "src" not in p.name)


def test_synthetic_payload_compressors(synthetic: list[Path], opened: Reader) -> None:
    found = {opened(p).payload_compressor for p in synthetic}
    assert found == {"zstd", "xz", "lzma", "gzip", "bzip2", "none"}


def test_synthetic_permissions(synthetic: list[Path], opened: Reader) -> None:
    perms = opened(_synthetic(synthetic, "tp-perms"))
    entries = {str(e.path): e for e in perms.entries}
    suid, sgid = entries["/usr/libexec/tp/suid-helper"], entries["/usr/libexec/tp/sgid-helper"]
    assert (suid.mode, suid.user) == (0o4755, "root")
    assert (sgid.mode, sgid.group, sgid.gid) == (0o2755, "daemon", 2)
    private = entries["/var/lib/tp/private"]
    assert (private.kind, private.mode, private.user, private.uid) == (
        EntryKind.DIR,
        0o700,
        "daemon",
        2,
    )
    assert perms.capabilities == {"/usr/libexec/tp/caps-helper": "cap_net_raw=ep"}
    assert perms.ghosts == ("/etc/tp/generated.conf",)
    assert set(perms.conffiles) == {"/etc/tp/optional.conf", "/etc/tp/secret.conf"}
    modes = {e.mode for e in opened(_synthetic(synthetic, "tp-filesystem")).entries}
    assert 0o1777 in modes


def test_synthetic_files(synthetic: list[Path], opened: Reader) -> None:
    entries = {str(e.path): e for e in opened(_synthetic(synthetic, "tp-files")).entries}
    base = "/usr/share/tp/files/"
    assert entries[base + "hardlink-b.txt"].target == base + "hardlink-a.txt"
    assert entries[base + "subdir/hardlink-c.txt"].target == base + "hardlink-a.txt"
    assert entries[base + "empty-file"].size == 0
    assert entries[base + "big.txt"].size > 400_000
    assert entries[base + "symlink-dangling"].target == "does-not-exist"
    assert base + "name with spaces.txt" in entries
    assert any(not path.isascii() for path in entries)


def test_synthetic_scriptlets_and_triggers(synthetic: list[Path], opened: Reader) -> None:
    scripts = opened(_synthetic(synthetic, "tp-scripts"))
    assert [(s.phase, s.stage, s.interpreter) for s in scripts.scripts] == [
        ("pretrans", 0, "<lua>"),
        ("pre", 1, "/bin/sh"),
        ("post", 1, "/bin/sh"),
        ("posttrans", 2, "/bin/sh"),
    ]
    assert {(t.scope, t.kind) for t in scripts.triggers} == {
        ("package", "in"),
        ("package", "un"),
        ("file", "in"),
        ("transfile", "in"),
    }
    assert all(t.priority == 1000000 for t in scripts.triggers if t.scope != "package")
    lua = opened(_synthetic(synthetic, "tp-luascripts"))
    assert {s.kind: s.interpreter for s in lua.scriptlets} == {
        "post": "<lua>",
        "postun": "<lua>",
        "posttrans": "<lua>",
    }


def test_synthetic_weak_and_rich_dependencies(synthetic: list[Path]) -> None:
    rich = read_rpm_header(_synthetic(synthetic, "tp-rich"))
    assert sum(dep.is_rich for dep in rich.requires) == 3
    kinds = set()
    for package in synthetic_binary_rpms():
        header = read_rpm_header(package)
        kinds |= {kind for kind in DEPENDENCY_KINDS if getattr(header, kind)}
    assert kinds == set(DEPENDENCY_KINDS)


# ------------------------------------------------------------------ rpm's stripped payload


_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": zstandard.ZstdCompressor().compress,
    "xz": lzma.compress,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "none": bytes,
}


def _stripped_package(path: Path, compressor: str, name: str) -> Path:
    """Files as rpm >= 4.12 writes them when one is 4 GiB or more: LONGFILESIZES and
    "07070X" members; a three-name hardlink set carries its data on the last name."""
    files = [  # path, mode, data, link target, inode
        ("/opt/tp", 0o40755, b"", "", 1),
        ("/opt/tp/a.txt", 0o100644, b"hello\n", "", 2),
        ("/opt/tp/h1", 0o100640, b"", "", 4),
        ("/opt/tp/h2", 0o100640, b"", "", 4),
        ("/opt/tp/h3", 0o100640, b"linked data\n", "", 4),
        ("/opt/tp/link", 0o120777, b"a.txt", "a.txt", 3),
        ("/opt/tp/sub", 0o40700, b"", "", 5),
        ("/opt/tp/sub/empty", 0o104755, b"", "", 6),
    ]
    linked = b"linked data\n"
    dirs = sorted({p.rsplit("/", 1)[0] + "/" for p, *_ in files})
    count = len(files)

    def digest(mode: int, data: bytes, inode: int) -> str:
        if not stat.S_ISREG(mode):
            return ""
        return hashlib.sha256(linked if inode == 4 else data).hexdigest()

    tags: dict[int, TagValue] = {
        1000: (STRING, name),
        1001: (STRING, "1.0"),
        1002: (STRING, "1"),
        1004: (STRING, "stripped cpio payload"),
        1005: (STRING, "A package with rpm's stripped cpio payload."),
        1014: (STRING, "MIT"),
        1016: (STRING, "Unspecified"),
        1021: (STRING, "linux"),
        1022: (STRING, "noarch"),
        1030: (INT16, [mode for _, mode, *_ in files]),
        1033: (INT16, [0] * count),
        1034: (INT32, [1_700_000_000] * count),
        1035: (STRING_ARRAY, [digest(m, d, i) for _, m, d, _, i in files]),
        1036: (STRING_ARRAY, [link for *_, link, _ in files]),
        1037: (INT32, [0] * count),
        1039: (STRING_ARRAY, ["root"] * (count - 1) + ["daemon"]),
        1040: (STRING_ARRAY, ["root"] * count),
        1047: (STRING_ARRAY, [name]),
        1048: (INT32, [(1 << 24) | 8 | 2] * 3),
        1049: (
            STRING_ARRAY,
            ["rpmlib(CompressedFileNames)", "rpmlib(LargeFiles)", "rpmlib(PayloadFilesHavePrefix)"],
        ),
        1050: (STRING_ARRAY, ["3.0.4-1", "4.12.0-1", "4.0-1"]),
        1095: (INT32, [1] * count),
        1096: (INT32, [inode for *_, inode in files]),
        1112: (INT32, [8]),
        1113: (STRING_ARRAY, ["1.0-1"]),
        1116: (INT32, [dirs.index(p.rsplit("/", 1)[0] + "/") for p, *_ in files]),
        1117: (STRING_ARRAY, [p.rsplit("/", 1)[1] for p, *_ in files]),
        1118: (STRING_ARRAY, dirs),
        1124: (STRING, "cpio"),
        1125: (STRING, compressor),
        1126: (STRING, "3"),
        5008: (INT64, [len(linked) if inode == 4 else len(data) for _, _, data, _, inode in files]),
        5009: (INT64, 100),
        5011: (INT32, 8),
    }
    members = [(fx, data) for fx, (_, _, data, _, _) in enumerate(files)]
    return write_rpm(path, tags, _COMPRESSORS[compressor](stripped_cpio(members)))


@pytest.mark.skipif(os.geteuid() != 0, reason="rpm -i --root needs root")
@pytest.mark.parametrize("compressor", sorted(_COMPRESSORS))
def test_stripped_payload_matches_rpm_install(compressor: str, tmp_path: Path) -> None:
    package = _stripped_package(tmp_path / "tp-stripped.rpm", compressor, "tp-stripped")
    contents = read_rpm(package, Spool(tmp_path / "spool"), origin=package.name)
    assert contents.payload_compressor == compressor
    kinds = {str(e.path): (e.kind, e.target) for e in contents.entries}
    assert kinds["/opt/tp/h1"] == (EntryKind.FILE, None)
    assert kinds["/opt/tp/h3"] == (EntryKind.HARDLINK, "/opt/tp/h1")
    problems = entry_problems(package, contents)
    root = tmp_path / "root"
    installed = subprocess.run(
        [
            "rpm",
            "--root",
            str(root),
            "--dbpath",
            "/var/lib/rpm",
            "-i",
            "--nodeps",
            "--noscripts",
            "--nosignature",
            "--nodigest",
            str(package),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    problems += tree_problems(contents, root)
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ damaged packages


def _refused(package: Path, *, header_too: bool = True) -> list[str]:
    """The one-line errors of read_rpm (and read_rpm_header) on `package`."""
    messages = []
    readers: list[Callable[[], object]] = [
        lambda: read_rpm(package, Spool(package.parent / "spool"), origin="broken")
    ]
    if header_too:
        readers.append(lambda: read_rpm_header(package))
    for reader in readers:
        with pytest.raises(ArchiveError) as caught:
            reader()
        message = str(caught.value)
        assert message.startswith(f"{package}: ") or message.startswith(f"cannot read {package}")
        assert "\n" not in message
        messages.append(message)
    return messages


def _cut_points(package: Path) -> Iterator[int]:
    size = package.stat().st_size
    yield from (2, 50, 100, 200, 1000, size // 2, size - 100, size - 1)


@pytest.mark.parametrize(
    "name", ["sendmail", "info-4", "mc-4", "PamCheck", "hlinktest", "nodejs010-runtime"]
)
def test_truncated_copies_are_refused(name: str, tmp_path: Path) -> None:
    original = _real(name)
    data = original.read_bytes()
    for cut in _cut_points(original):
        package = tmp_path / f"cut-{cut}-{original.name}"
        package.write_bytes(data[:cut])
        for message in _refused(package):
            expected = "not an RPM package" if cut < 4 else "corrupt or truncated RPM"
            assert expected in message, (cut, message)


def test_random_bytes_are_not_an_rpm(tmp_path: Path) -> None:
    package = tmp_path / "x.rpm"
    package.write_bytes(random.Random(1).randbytes(5000))
    assert all("not an RPM package (bad lead magic)" in m for m in _refused(package))


def test_deb_renamed_is_not_an_rpm(tmp_path: Path) -> None:
    deb = build_deb(tmp_path, "tp-renamed", "1.0", files={"/usr/share/tp/a": b"a\n"})
    package = deb.rename(tmp_path / "tp-renamed.rpm")
    assert all("not an RPM package" in m for m in _refused(package))


def test_missing_file_is_reported(tmp_path: Path) -> None:
    messages = _refused(tmp_path / "gone.rpm")
    assert all("No such file" in m for m in messages)


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


def test_damaged_content_fails_its_digest(tmp_path: Path, opened: Reader) -> None:
    # hlinktest's payload is plain cpio: change one byte of a file's data.
    original = _real("hlinktest")
    data = original.read_bytes()
    member = read_content(next(e for e in opened(original).entries if e.size))
    package = tmp_path / original.name
    package.write_bytes(_flip(data, data.rindex(member) + 3))
    (message,) = _refused(package, header_too=False)
    assert "does not match its sha256 digest" in message
    assert read_rpm_header(package) == read_rpm_header(original)  # the header is intact


@pytest.mark.parametrize("name", ["sendmail", "info-4", "mc-4", "PamCheck"])
def test_damaged_compressed_payload_is_refused(name: str, tmp_path: Path) -> None:
    original = _real(name)
    data = original.read_bytes()
    with original.open("rb") as stream:
        read_headers(stream)
        payload = stream.tell()
    package = tmp_path / original.name
    package.write_bytes(_flip(data, (payload + len(data)) // 2))
    (message,) = _refused(package, header_too=False)
    assert "corrupt or truncated RPM" in message


def test_inconsistent_header_is_refused(tmp_path: Path) -> None:
    package = _stripped_package(tmp_path / "tp-bad.rpm", "gzip", "tp-bad")
    data = bytearray(package.read_bytes())
    # FILEMODES (tag 1030, INT16) claims one entry more than there are files.
    entry = data.index((1030).to_bytes(4, "big") + (3).to_bytes(4, "big"))
    count = int.from_bytes(data[entry + 12 : entry + 16], "big")
    data[entry + 12 : entry + 16] = (count + 1).to_bytes(4, "big")
    package.write_bytes(bytes(data))
    (message,) = _refused(package, header_too=False)
    assert "FILEMODES has 9 entries for 8 files" in message


def test_oversized_header_is_refused(tmp_path: Path) -> None:
    original = _real("PamCheck")
    data = bytearray(original.read_bytes())
    signature_end = 96 + 16 + 16 * int.from_bytes(data[104:108], "big")
    signature_end += int.from_bytes(data[108:112], "big")
    signature_end += -signature_end % 8
    data[signature_end + 8 : signature_end + 12] = (0x7FFFFFFF).to_bytes(4, "big")
    package = tmp_path / original.name
    package.write_bytes(bytes(data))
    assert all("main header too large" in m for m in _refused(package))


def test_spool_holds_only_contents(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    contents = read_rpm(_real("hlinktest"), Spool(spool_dir), origin="hlinktest")
    spans = {(e.content, e.content_offset, e.size) for e in contents.entries if e.content}
    # One pack for the archive; in it a span per hardlink set, none for the links.
    assert {path for path, _, _ in spans} == set(spool_dir.iterdir())
    assert len(spans) == 3 and len({offset for _, offset, _ in spans}) == 3
