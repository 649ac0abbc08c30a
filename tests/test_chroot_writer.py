"""The chroot writer and the mtree file beside it, on hand-built entry lists."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from support.debdata import cache_root
from support.privileges import NOBODY, make_world_dir, run_unprivileged

import supermin
from supermin.entry import KIND_FORMAT_BITS, EntryKind, FileEntry
from supermin.errors import ArchiveError, OutputError
from supermin.outputs.chroot import write_chroot
from supermin.outputs.mtree import read_mtree, write_mtree

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners and devices need root")

T0 = 1_600_000_000
BIG = os.urandom(3 * 1024 * 1024 + 17)  # several copy chunks' worth, odd size
# Names the mtree must escape: space, '#', '=', '\', tab, newline, non-ASCII, non-UTF-8.
WEIRD = "/weird name #=\\\t\n\u00e9" + os.fsdecode(b"\xff")


def _entry(path: str, kind: EntryKind, mode: int, **fields: object) -> FileEntry:
    return FileEntry(PurePosixPath(path), kind, mode, **fields)  # type: ignore[arg-type]


def _file(content_dir: Path, path: str, mode: int, data: bytes, **fields: object) -> FileEntry:
    source = content_dir / f"c{len(list(content_dir.iterdir()))}"
    source.write_bytes(data)
    source.chmod(0o644)
    return _entry(path, EntryKind.FILE, mode, size=len(data), content=source, **fields)


def _hardlink(target: FileEntry, path: str) -> FileEntry:
    # As the merge step makes them: the set's metadata, no content of its own.
    return FileEntry(
        PurePosixPath(path),
        EntryKind.HARDLINK,
        target.mode,
        target.uid,
        target.gid,
        target.user,
        target.group,
        target.mtime,
        0,
        str(target.path),
    )


def sample_entries(content_dir: Path, *, weird: bool = True) -> list[FileEntry]:
    """Every kind of entry, each with its own mtime, sorted as the merge step sorts."""
    content_dir.mkdir(exist_ok=True)
    d, f, s = EntryKind.DIR, EntryKind.FILE, EntryKind.SYMLINK
    ping = _file(content_dir, "/bin/ping", 0o4755, b"ping\n", mtime=T0 + 3)
    sg = _file(content_dir, "/bin/sg", 0o2755, b"sg\n", gid=42, group="shadow", mtime=T0 + 4)
    entries = [
        _entry("/", d, 0o755, mtime=T0 + 1),
        _entry("/bin", d, 0o755, mtime=T0 + 2),
        ping,
        _hardlink(ping, "/bin/ping6"),
        sg,
        _entry("/dev", d, 0o755, mtime=T0 + 5),
        _entry("/dev/null", EntryKind.CHAR, 0o666, rdev=(1, 3), mtime=T0 + 6),
        _entry("/dev/sda", EntryKind.BLOCK, 0o660, gid=6, group="disk", rdev=(8, 0), mtime=T0 + 7),
        _entry("/empty", f, 0o644, mtime=T0 + 8),
        _entry("/home", d, 0o755, mtime=T0 + 9),
        _entry("/home/user", d, 0o700, uid=1, gid=1, user="daemon", group="daemon", mtime=T0 + 10),
        _file(
            content_dir,
            "/home/user/big",
            0o640,
            BIG,
            uid=70000,
            gid=70001,
            user="big",
            group="big",
            mtime=T0 + 11,
        ),
        _entry("/link-abs", s, 0o777, target="/bin/ping", mtime=T0 + 12),
        _entry("/link-dangling", s, 0o777, target="/nonexistent/target", mtime=T0 + 13),
        _entry(
            "/link-rel",
            s,
            0o777,
            target="bin/ping",
            uid=1,
            gid=1,
            user="daemon",
            group="daemon",
            mtime=T0 + 14,
        ),
        _entry("/ro", d, 0o555, mtime=T0 + 15),
        _file(content_dir, "/ro/file", 0o444, b"read only\n", mtime=T0 + 16),
        _entry("/ro/locked", d, 0o000, mtime=T0 + 17),
        _file(content_dir, "/ro/locked/secret", 0o000, b"secret\n", mtime=T0 + 18),
        _entry("/run", d, 0o755, mtime=T0 + 19),
        _entry("/run/fifo", EntryKind.FIFO, 0o620, mtime=T0 + 20),
        _entry("/run/sock", EntryKind.SOCKET, 0o755, mtime=T0 + 21),
        _entry("/srv", d, 0o2775, gid=50, group="staff", mtime=T0 + 22),
        _file(content_dir, "/srv/shared", 0o664, b"shared\n", gid=50, group="staff", mtime=T0 + 28),
        _entry("/tmp", d, 0o1777, mtime=T0 + 23),
        _entry("/usr", d, 0o755, mtime=T0 + 24),
        _entry("/usr/sbin", d, 0o755, mtime=T0 + 25),
        _hardlink(sg, "/usr/sbin/sg"),
    ]
    if weird:
        entries.append(_file(content_dir, WEIRD, 0o600, b"odd\n", mtime=T0 + 26))
        entries.append(_entry(WEIRD + "-link", s, 0o777, target="../x y#\\", mtime=T0 + 27))
    return sorted(entries, key=lambda e: e.path.parts)


def _host(root: Path, path: PurePosixPath) -> Path:
    return root / str(path).lstrip("/")


def _targets(entries: list[FileEntry]) -> dict[str, FileEntry]:
    return {str(e.path): e for e in entries if e.kind is EntryKind.FILE}


def check_tree(root: Path, entries: list[FileEntry], *, owner: tuple[int, int] | None) -> None:
    """Compare the tree with the entries; `owner` None means the entries' own owners."""
    files = _targets(entries)
    for entry in entries:
        host = _host(root, entry.path)
        if entry.kind is EntryKind.SOCKET or (
            owner is not None and entry.kind in (EntryKind.CHAR, EntryKind.BLOCK)
        ):
            assert not os.path.lexists(host), entry.path
            continue
        st = host.lstat()
        what = f"{entry.path}: {stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}"
        assert stat.S_IFMT(st.st_mode) == KIND_FORMAT_BITS[entry.kind], what
        assert (st.st_uid, st.st_gid) == (owner or (entry.uid, entry.gid)), what
        assert st.st_mtime == entry.mtime, what
        if entry.kind is not EntryKind.SYMLINK:
            assert stat.S_IMODE(st.st_mode) == entry.mode, what
        if entry.kind is EntryKind.SYMLINK:
            assert os.readlink(host) == entry.target
        elif entry.kind is EntryKind.FILE:
            assert entry.content is None or host.read_bytes() == entry.content.read_bytes()
            assert st.st_size == entry.size
        elif entry.kind is EntryKind.HARDLINK:
            target = _host(root, files[entry.target or ""].path).lstat()
            assert (st.st_ino, st.st_nlink, target.st_nlink) == (target.st_ino, 2, 2), what
        elif entry.kind in (EntryKind.CHAR, EntryKind.BLOCK):
            assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == entry.rdev


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ------------------------------------------------------------------ as root


@needs_root
def test_root_writes_every_kind_exactly(tmp_path: Path) -> None:
    entries = sample_entries(tmp_path / "content")
    root = tmp_path / "root"
    root.mkdir()
    before = _open_fds()
    write_chroot(entries, root, privileged=True)
    assert _open_fds() == before
    check_tree(root, entries, owner=None)
    assert (root / "link-abs").is_symlink() and not (root / "link-dangling").exists()
    assert (root / "link-rel").resolve() == (root / "bin/ping").resolve()


# ------------------------------------------------------------------ as nobody

UNPRIVILEGED_BUILD = """
import pickle, sys
from pathlib import Path
import supermin.outputs.chroot as chroot
from supermin.outputs.mtree import write_mtree
entries = pickle.loads(Path(sys.argv[1]).read_bytes())
Path(sys.argv[2]).mkdir()
helpers = int(sys.argv[4])
if helpers:  # any tree is written by this many helper processes and this one
    chroot.HELPER_THRESHOLD = 1
    started = []
    start = chroot._Helpers.start.__func__
    record = lambda cls, *a: started.append(start(cls, *a)) or started[-1]
    chroot._Helpers.start = classmethod(record)
chroot.write_chroot(entries, Path(sys.argv[2]), jobs=helpers + 1)
if helpers:
    assert [len(h.processes) for h in started] == [helpers], started
    assert all(p.returncode == 0 for p in started[0].processes)
write_mtree(entries, Path(sys.argv[3]))
"""


def _remove_tree(path: Path) -> None:
    """rmtree that copes with the 0000 and 0555 directories a non-root build leaves."""
    for top, dirs, _files in os.walk(path):
        for name in dirs:
            child = Path(top) / name
            if not child.is_symlink():
                child.chmod(0o700)
    shutil.rmtree(path)


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A scratch directory uid 65534 can use (pytest's tmp_path is 0700 root)."""
    path = make_world_dir(cache_root() / "tmp" / f"chroot-writer-{uuid.uuid4().hex[:12]}")
    try:
        yield path
    finally:
        _remove_tree(path)


def _world_readable_package(dest: Path) -> Path:
    """A copy of the supermin package that uid 65534 can import (PYTHONPATH entry)."""
    shutil.copytree(
        Path(supermin.__file__).parent,
        dest / "supermin",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for top, dirs, files in os.walk(dest):
        for name in dirs:
            (Path(top) / name).chmod(0o755)
        for name in files:
            (Path(top) / name).chmod(0o644)
    dest.chmod(0o755)
    return dest


@pytest.mark.parametrize("helpers", [0, 2], ids=["threads", "helper-processes"])
def test_unprivileged_build_keeps_modes_and_records_the_truth(
    world_dir: Path, helpers: int
) -> None:
    entries = sample_entries(world_dir / "content")
    (world_dir / "entries.pickle").write_bytes(pickle.dumps(entries))
    package = _world_readable_package(world_dir / "python")
    chroot, mtree = world_dir / "chroot", world_dir / "chroot.mtree"
    env = {
        **os.environ,
        "HOME": "/nonexistent",
        "PYTHONPATH": str(package),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    run_unprivileged(
        [
            sys.executable,
            "-c",
            UNPRIVILEGED_BUILD,
            str(world_dir / "entries.pickle"),
            str(chroot),
            str(mtree),
            str(helpers),
        ],
        env=env,
    )
    me = (NOBODY, NOBODY) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    # Modes (setuid, setgid, sticky, 0555 and 0000 directories that still got their
    # files) and mtimes as asked; the builder's owner; no device nodes, no socket.
    check_tree(chroot, entries, owner=me)
    assert (chroot / "ro/locked/secret").read_bytes() == b"secret\n"
    records = {r["path"]: r for r in read_mtree(mtree)}
    assert records["/dev/null"]["type"] == "char" and records["/dev/null"]["rdev"] == (1, 3)
    assert records["/dev/sda"]["type"] == "block" and records["/dev/sda"]["rdev"] == (8, 0)
    assert records["/dev/sda"]["gid"] == 6 and records["/dev/sda"]["gname"] == "disk"
    assert records["/bin/ping"]["uid"] == 0 and records["/bin/ping"]["mode"] == 0o4755
    assert records["/home/user/big"]["uid"] == 70000
    assert records["/run/sock"]["type"] == "socket"
    assert records["/tmp"]["mode"] == 0o1777 and records["/ro/locked"]["mode"] == 0


# ------------------------------------------------------------------ hostile input


@pytest.mark.parametrize("link", ["/", "../../..", "../../../.."])
@pytest.mark.parametrize("kind", [EntryKind.FILE, EntryKind.DIR, EntryKind.SYMLINK, EntryKind.FIFO])
def test_nothing_is_written_through_a_symlink(tmp_path: Path, link: str, kind: EntryKind) -> None:
    root = tmp_path / "x" / "y" / "root"
    root.mkdir(parents=True)
    name = f"supermin-evil-{uuid.uuid4().hex}"
    source = tmp_path / "evil-content"
    source.write_bytes(b"evil\n")
    evil = _entry(
        f"/a/{name}",
        kind,
        0o644,
        target="/",
        size=5,
        content=source if kind is EntryKind.FILE else None,
    )
    entries = [
        _entry("/", EntryKind.DIR, 0o755),
        _entry("/a", EntryKind.SYMLINK, 0o777, target=link),
        evil,
    ]
    before = _open_fds()
    with pytest.raises(OutputError, match=f"cannot write /a/{name} into"):
        write_chroot(entries, root, privileged=os.geteuid() == 0)
    assert _open_fds() == before
    outside = (root / link).resolve() if not link.startswith("/") else Path(link)
    assert not os.path.lexists(outside / name)
    assert not any(name in p.name for p in tmp_path.rglob("*"))


def test_dotdot_components_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    name = f"escape-{uuid.uuid4().hex}"
    for path in (f"/../{name}", f"/sub/../../{name}"):
        entry = FileEntry(PurePosixPath(path), EntryKind.DIR, 0o755)
        with pytest.raises(OutputError, match="'..' component"):
            write_chroot([_entry("/", EntryKind.DIR, 0o755), entry], root)
    assert not (tmp_path / name).exists()


def test_existing_symlink_is_never_replaced_or_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me\n")
    source = tmp_path / "content"
    source.write_bytes(b"evil\n")
    entries = [
        _entry("/a", EntryKind.SYMLINK, 0o777, target=str(victim)),
        _entry("/a", EntryKind.FILE, 0o644, size=5, content=source),
    ]
    with pytest.raises(OutputError, match="cannot write /a into") as caught:
        write_chroot(entries, root)
    assert "twice" in caught.value.hint
    assert victim.read_bytes() == b"keep me\n"


def test_hardlink_must_point_at_an_earlier_file(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    root = tmp_path / "root"
    root.mkdir()
    entries = [
        _entry("/etc", EntryKind.SYMLINK, 0o777, target=str(outside)),
        _entry("/shadow", EntryKind.HARDLINK, 0o644, target="/etc/passwd"),
    ]
    with pytest.raises(OutputError, match="not a file written before"):
        write_chroot(entries, root)
    assert (outside / "passwd").stat().st_nlink == 1
    assert not (root / "shadow").exists()


def test_root_entry_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="the root cannot be a symlink"):
        write_chroot([_entry("/", EntryKind.SYMLINK, 0o777, target="/etc")], tmp_path)


def test_content_size_mismatch_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "content"
    source.write_bytes(b"12345")
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(OutputError, match="holds 5 bytes, the entry says 4"):
        write_chroot([_entry("/f", EntryKind.FILE, 0o644, size=4, content=source)], root)
    with pytest.raises(OutputError, match="no content for its 3 bytes"):
        write_chroot([_entry("/g", EntryKind.FILE, 0o644, size=3)], root)


def test_missing_parent_names_the_entry(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write /no/such into") as caught:
        write_chroot([_entry("/no/such", EntryKind.DIR, 0o755)], tmp_path)
    assert "missing" in caught.value.hint


def test_unreadable_content_names_the_content_file(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    with pytest.raises(OutputError, match=f"cannot write /f into .*: cannot read {gone}"):
        write_chroot([_entry("/f", EntryKind.FILE, 0o644, size=1, content=gone)], tmp_path)


# ------------------------------------------------------------------ mtree


def _expected(entries: list[FileEntry]) -> list[dict[str, object]]:
    files = _targets(entries)
    links: dict[str, int] = {}
    for entry in entries:
        if entry.kind is EntryKind.HARDLINK:
            links[entry.target or ""] = links.get(entry.target or "", 1) + 1
    inodes = {path: number for number, path in enumerate(links, start=1)}
    expected = []
    for entry in entries:
        key = entry.target if entry.kind is EntryKind.HARDLINK else str(entry.path)
        data = files[key or ""] if key in links else entry
        symlink = entry.kind is EntryKind.SYMLINK
        device = entry.kind in (EntryKind.CHAR, EntryKind.BLOCK)
        expected.append(
            {
                "path": str(entry.path),
                "type": {EntryKind.HARDLINK: "file", EntryKind.SYMLINK: "link"}.get(
                    entry.kind, str(entry.kind)
                ),
                "mode": data.mode,
                "uid": data.uid,
                "gid": data.gid,
                "uname": data.user,
                "gname": data.group,
                "mtime": data.mtime,
                "size": data.size if data.kind is EntryKind.FILE else 0,
                "link": entry.target if symlink else None,
                "rdev": entry.rdev if device else (0, 0),
                "nlink": links.get(key or "", 0),
                "inode": inodes.get(key or "", 0),
            }
        )
    return expected


def test_mtree_round_trips_every_field_of_every_kind(tmp_path: Path) -> None:
    entries = sample_entries(tmp_path / "content")
    mtree = tmp_path / "image.mtree"
    write_mtree(entries, mtree)
    assert read_mtree(mtree) == _expected(entries)
    text = mtree.read_text(encoding="ascii")
    assert "./weird\\040name\\040\\043\\075\\134\\011\\012\\303\\251\\377 type=file" in text
    assert "./bin/ping6 type=file mode=4755" in text and " nlink=2 inode=1" in text


def test_mtree_is_deterministic(tmp_path: Path) -> None:
    entries = sample_entries(tmp_path / "content")
    write_mtree(entries, tmp_path / "one")
    write_mtree(entries, tmp_path / "two")
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()


def test_reading_the_mtree_never_looks_at_the_described_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = sample_entries(tmp_path / "content", weird=False)
    write_mtree(entries, tmp_path / "image.mtree")
    # Files at the described paths, relative to the current directory, that differ.
    decoy = tmp_path / "decoy"
    (decoy / "bin").mkdir(parents=True)
    (decoy / "bin/ping").write_bytes(b"much longer than five bytes\n")
    (decoy / "dev").mkdir()
    (decoy / "dev/null").write_bytes(b"")
    monkeypatch.chdir(decoy)
    records = {r["path"]: r for r in read_mtree(tmp_path / "image.mtree")}
    assert records["/bin/ping"]["size"] == 5
    assert records["/dev/null"]["type"] == "char"


def test_bsdtar_lists_the_mtree(tmp_path: Path) -> None:
    bsdtar = shutil.which("bsdtar")
    assert bsdtar, "bsdtar is missing: apt-get install libarchive-tools"
    # libarchive reads type=socket as a file with a warning, and bsdtar then exits 1.
    entries = [
        e
        for e in sample_entries(tmp_path / "content", weird=False)
        if e.kind is not EntryKind.SOCKET
    ]
    mtree = tmp_path / "image.mtree"
    write_mtree(entries, mtree)
    names = subprocess.run(
        [bsdtar, "-tf", str(mtree)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert names == ["." if e.path.parts == ("/",) else "." + str(e.path) for e in entries]
    verbose = subprocess.run(
        [bsdtar, "-tvf", str(mtree)], capture_output=True, text=True, check=True
    ).stdout
    lines = {line.split()[-1]: line for line in verbose.splitlines() if "->" not in line}
    assert lines["./dev/null"].startswith("crw-rw-rw-") and " 1,3 " in lines["./dev/null"]
    assert lines["./bin/ping"].startswith("-rwsr-xr-x  2 root")
    assert lines["./tmp"].startswith("drwxrwxrwt")


def test_read_mtree_refuses_what_libarchive_does_not_understand(tmp_path: Path) -> None:
    mtree = tmp_path / "bad.mtree"
    mtree.write_text("#mtree\n./x type=door mode=0644 uid=0 gid=0 time=1.0\n")
    with pytest.raises(ArchiveError, match="libarchive cannot read ./x"):
        read_mtree(mtree)


def test_mtree_refuses_a_hardlink_to_nothing(tmp_path: Path) -> None:
    entries = [_entry("/x", EntryKind.HARDLINK, 0o644, target="/missing")]
    with pytest.raises(OutputError, match="hardlink target /missing"):
        write_mtree(entries, tmp_path / "image.mtree")


# ------------------------------------------------------------------ speed


def test_time_writing_twenty_thousand_small_files(tmp_path: Path) -> None:
    source = tmp_path / "content"
    source.write_bytes(b"x" * 600)
    entries = [_entry("/", EntryKind.DIR, 0o755)]
    for d in range(200):
        entries.append(_entry(f"/d{d:03}", EntryKind.DIR, 0o755, mtime=T0))
        entries.extend(
            _entry(f"/d{d:03}/f{f:03}", EntryKind.FILE, 0o644, size=600, content=source, mtime=T0)
            for f in range(100)
        )
    root = tmp_path / "root"
    root.mkdir()
    started = time.perf_counter()
    write_chroot(entries, root)
    chroot_seconds = time.perf_counter() - started
    started = time.perf_counter()
    write_mtree(entries, tmp_path / "image.mtree")
    mtree_seconds = time.perf_counter() - started
    print(
        f"\nwrite_chroot: {len(entries)} entries in {chroot_seconds:.2f}s; "
        f"write_mtree: {mtree_seconds:.2f}s"
    )
    assert sum(len(files) for _, _, files in os.walk(root)) == 20_000


@pytest.mark.parametrize("kept_open", [0, 1, 256])
def test_pack_descriptors_are_shared_and_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept_open: int
) -> None:
    # Members of three packs, interleaved, copied by two threads from shared
    # descriptors (or, past the limit, one opened per file); none left open.
    import supermin.outputs.chroot as chroot
    from supermin.spool import Spool

    monkeypatch.setattr(chroot, "_OPEN_PACKS", kept_open)
    spool = Spool(tmp_path / "spool")
    entries = [_entry("/", EntryKind.DIR, 0o755)]
    data = {}
    packs = [spool.pack() for _ in range(3)]
    opened = [context.__enter__() for context in packs]
    for number in range(60):
        payload = os.urandom(number * 997)
        path = f"/f{number:02d}"
        data[path] = payload
        entries.append(opened[number % 3].file_entry(PurePosixPath(path), payload, 0o644, T0))
    for context in packs:
        context.__exit__(None, None, None)
    before = len(os.listdir("/proc/self/fd"))
    root = tmp_path / "root"
    root.mkdir()
    write_chroot(entries, root, privileged=False, jobs=2)
    assert len(os.listdir("/proc/self/fd")) == before
    for path, payload in data.items():
        assert (root / path[1:]).read_bytes() == payload, path


# ------------------------------------------------------------------ helper processes


@pytest.fixture
def helpers_started(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Helper processes for a tree of any size; the _Helpers each write_chroot started."""
    import supermin.outputs.chroot as chroot

    monkeypatch.setattr(chroot, "HELPER_THRESHOLD", 1)
    started: list[object] = []
    start = chroot._Helpers.start.__func__  # type: ignore[attr-defined]

    def recording(cls: type, *args: object) -> object:
        started.append(start(cls, *args))
        return started[-1]

    monkeypatch.setattr(chroot._Helpers, "start", classmethod(recording))
    return started


def _children() -> set[str]:
    """The live child processes of this one (a killed helper must not linger)."""
    me = os.getpid()
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                found.add(pid)
    return found


@pytest.fixture
def this_process_claims_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run of files is left to the helpers (their own claims are not patched)."""
    import supermin.outputs.chroot as chroot

    monkeypatch.setattr(chroot._Claims, "next", lambda self: None)


@pytest.fixture
def helpers_go_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """The helpers are told to go only once this process has claimed every run."""
    import supermin.outputs.chroot as chroot

    go = chroot._Helpers.go
    finish = chroot._Helpers.finish
    monkeypatch.setattr(chroot._Helpers, "go", lambda self: None)

    def go_then_finish(self: object) -> None:
        go(self)  # type: ignore[arg-type]
        finish(self)  # type: ignore[arg-type]

    monkeypatch.setattr(chroot._Helpers, "finish", go_then_finish)


def _files(entries: list[FileEntry]) -> int:
    return sum(e.kind is EntryKind.FILE for e in entries)


@needs_root
def test_helper_processes_write_every_kind_exactly(
    tmp_path: Path, helpers_started: list[object]
) -> None:
    entries = sample_entries(tmp_path / "content")
    root = tmp_path / "root"
    root.mkdir()
    before, children_before = _open_fds(), _children()
    write_chroot(entries, root, privileged=True, jobs=3)
    assert _open_fds() == before
    [helpers] = helpers_started
    assert [len(p.args) > 0 and p.returncode for p in helpers.processes] == [0, 0]  # type: ignore[attr-defined]
    # Each file written once, by whichever writer claimed its run.
    assert helpers.own + sum(helpers.written) == _files(entries)  # type: ignore[attr-defined]
    assert len(helpers.written) == 2  # type: ignore[attr-defined]
    check_tree(root, entries, owner=None)
    assert _children() <= children_before


@needs_root
@pytest.mark.parametrize(
    ("who", "jobs"),
    [("this_process_claims_nothing", 2), ("helpers_go_last", 3)],
    ids=["helper-alone", "this-process-alone"],
)
def test_whichever_writer_claims_the_files_writes_them_exactly(
    tmp_path: Path,
    helpers_started: list[object],
    who: str,
    jobs: int,
    request: pytest.FixtureRequest,
) -> None:
    request.getfixturevalue(who)
    entries = sample_entries(tmp_path / "content")
    root = tmp_path / "root"
    root.mkdir()
    write_chroot(entries, root, privileged=True, jobs=jobs)
    [helpers] = helpers_started
    files = _files(entries)
    if who == "this_process_claims_nothing":
        assert (helpers.own, helpers.written) == (0, [files])  # type: ignore[attr-defined]
    else:
        assert (helpers.own, helpers.written) == (files, [0, 0])  # type: ignore[attr-defined]
    check_tree(root, entries, owner=None)


@needs_root
def test_a_set_group_id_output_directory_hands_down_no_group(tmp_path: Path) -> None:
    # A file made in such a directory gets the directory's group, not ours: the
    # writer must then set every file's group, even where it is ours.
    entries = sample_entries(tmp_path / "content")
    root = tmp_path / "root"
    root.mkdir()
    os.chown(root, 0, 50)
    root.chmod(0o2755)
    write_chroot(entries, root, privileged=True, jobs=1)
    check_tree(root, [e for e in entries if str(e.path) != "/"], owner=None)
    assert (root / "empty").stat().st_gid == 0


def test_claims_hand_each_run_to_exactly_one_reader(tmp_path: Path) -> None:
    # Two processes and this one read the same claims at once.
    from supermin.outputs.chroot import _Claims

    claims = _Claims(_Claims.LIMIT, 3)
    reader = (
        "import os, sys, time\n"
        "fd = int(sys.argv[1]); got = []\n"
        "while (n := os.read(fd, 4)):\n"
        "    got.append(str(int.from_bytes(n, 'big'))); time.sleep(0.0005)\n"
        "print(' '.join(got))\n"
    )
    others = [
        subprocess.Popen(
            [sys.executable, "-c", reader, str(claims.fd)],
            pass_fds=(claims.fd,),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    mine = []
    while (number := claims.next()) is not None:
        mine.append(number)
        time.sleep(0.0005)
    claims.close()
    theirs = [[int(n) for n in p.communicate()[0].split()] for p in others]
    every = mine + theirs[0] + theirs[1]
    assert sorted(every) == list(range(_Claims.LIMIT))
    assert all(theirs) and mine, "every reader claimed some"
    with pytest.raises(ValueError):
        _Claims(_Claims.LIMIT + 1, 2)


@pytest.mark.parametrize(
    "path",
    ["relative", "/", "/a//b", "/a/./b", "/a/../b", "/a/b/", "/a/.", "/a/..", "/a\0b"],
)
def test_file_paths_that_could_climb_out_are_refused(path: str) -> None:
    from supermin.outputs.chroot import _path_names

    with pytest.raises(ValueError):
        _path_names(path)
    assert _path_names("/usr/bin/a.b") == ["usr", "bin", "a.b"]


def _failing_tree(content_dir: Path, bad: int) -> list[FileEntry]:
    """Eight files; file `bad` names a content file that does not exist."""
    content_dir.mkdir()
    entries = [_entry("/", EntryKind.DIR, 0o755)]
    for number in range(8):
        if number == bad:
            entries.append(
                _entry(f"/f{number}", EntryKind.FILE, 0o644, size=3, content=content_dir / "gone")
            )
        else:
            entries.append(_file(content_dir, f"/f{number}", 0o644, b"abc"))
    return entries


@pytest.mark.parametrize(
    "who", ["helpers_go_last", "this_process_claims_nothing"], ids=["this-process", "helper"]
)
def test_a_failed_run_reports_what_one_writer_reports(
    tmp_path: Path, helpers_started: list[object], who: str, request: pytest.FixtureRequest
) -> None:
    entries = _failing_tree(tmp_path / "content", bad=5)
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    alone.mkdir()
    shared.mkdir()
    with pytest.raises(OutputError) as one_writer:
        write_chroot(entries, alone, privileged=False, jobs=1)
    assert helpers_started == []
    request.getfixturevalue(who)  # the file is written by this process, or by the helper
    children_before = _children()
    with pytest.raises(OutputError) as with_helpers:
        write_chroot(entries, shared, privileged=False, jobs=2)
    [helpers] = helpers_started
    assert len(helpers.processes) == 1  # type: ignore[attr-defined]
    message = str(one_writer.value).replace(str(alone), str(shared))
    assert str(with_helpers.value) == message
    assert f"cannot write /f5 into {shared}: cannot read" in message
    assert _children() <= children_before


def test_no_helper_is_left_when_this_process_fails_first(
    tmp_path: Path, helpers_started: list[object]
) -> None:
    # A directory cannot be made (the output was not empty): the helpers, fed
    # already, are stopped before they write anything and none outlives the call.
    entries = _failing_tree(tmp_path / "content", bad=-1)
    entries.insert(1, _entry("/d", EntryKind.DIR, 0o755))
    root = tmp_path / "root"
    root.mkdir()
    (root / "d").write_bytes(b"in the way")
    children_before = _children()
    with pytest.raises(OutputError, match="cannot write /d into"):
        write_chroot(entries, root, privileged=False, jobs=2)
    [helpers] = helpers_started
    assert all(p.returncode is not None for p in helpers.processes)  # type: ignore[attr-defined]
    assert os.listdir(root) == ["d"]
    assert _children() <= children_before


def test_threads_write_the_tree_when_no_helper_can_start(
    tmp_path: Path, helpers_started: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    import supermin.outputs.chroot as chroot

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(chroot.subprocess, "Popen", refuse)
    entries = sample_entries(tmp_path / "content")
    root = tmp_path / "root"
    root.mkdir()
    write_chroot(entries, root, privileged=False, jobs=2)
    assert helpers_started == [None]
    check_tree(root, entries, owner=(os.geteuid(), os.getegid()))
