"""The extraction cache: warm builds decompress nothing, damaged entries are never used."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.debdata import build_update_debs, real_pool, synthetic_debs
from support.privileges import make_world_dir
from support.product import scratch_dir, sha256, supermin_nobody
from support.rpmdata import synthetic_binary_rpms

from supermin.backends.deb.reader import DebReader
from supermin.backends.rpm.reader import RpmReader
from supermin.build import place_kernel
from supermin.cache import cached, file_identity
from supermin.content import read_content
from supermin.entry import FileEntry
from supermin.extraction_cache import ExtractionCache, prune
from supermin.hostfiles.hostfs import HostFiles
from supermin.kernel import Kernel
from supermin.packages import Package, PackageContents, PackageReader
from supermin.spool import Spool
from supermin.staging import Stage

ROOTS = ["bash", "coreutils", "tp-update"]
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}
_SUMMARY = re.compile(r"extraction cache \S+: (\d+) hits, (\d+) misses")
_DAY = 86400


# ---------------------------------------------------------------- in process


class CountingReader:
    """A reader that counts the archives it really opens (decompresses)."""

    def __init__(self, inner: PackageReader) -> None:
        self.inner = inner
        self.opened: list[str] = []
        self._lock = threading.Lock()

    def open(self, package: Package) -> PackageContents:
        with self._lock:
            self.opened.append(package.name)
        return self.inner.open(package)


def _package(archive: Path) -> Package:
    name = re.split(r"[_]|-\d", archive.name, maxsplit=1)[0]
    fmt = "rpm" if archive.suffix == ".rpm" else "deb"
    return Package(name, "0", "all", fmt, "test", location=archive)


def _archives() -> list[Path]:
    debs = sorted((synthetic_debs() / "pool").glob("*.deb"))
    rpms = [p for p in synthetic_binary_rpms() if not p.name.startswith("tp-broken")]
    return [*debs, *rpms]


def _reader(archive: Path, spool: Spool) -> CountingReader:
    host = HostFiles()
    inner = RpmReader(spool, host) if archive.suffix == ".rpm" else DebReader(spool, host)
    return CountingReader(inner)


def _snapshot(contents: PackageContents) -> tuple[object, ...]:
    """Everything a build takes from opened contents, with file bytes instead of paths."""

    def plain(entry: FileEntry) -> tuple[object, ...]:
        data = read_content(entry) if entry.content is not None else None
        fields = [getattr(entry, name) for name in FileEntry.__slots__ if name != "content"]
        return (*fields, data)

    return (
        [plain(e) for e in contents.entries],
        list(contents.scripts),
        list(contents.conffiles),
        contents.control_files,
    )


def _open_all(
    cache: ExtractionCache, spool: Spool, archives: list[Path]
) -> tuple[list[tuple[object, ...]], list[str]]:
    snapshots: list[tuple[object, ...]] = []
    opened: list[str] = []
    for archive in archives:
        reader = _reader(archive, spool)
        snapshots.append(_snapshot(cache.open(_package(archive), reader)))
        opened.extend(reader.opened)
    return snapshots, opened


def _records(root: Path) -> list[Path]:
    """Each entry's record: the file named by the key alone (its blobs add `.TAG.N`)."""
    return sorted(p for p in root.iterdir() if re.fullmatch(r"[0-9a-f]{64}", p.name))


def _entries(cache: ExtractionCache) -> list[Path]:
    return _records(cache.root)


def _blobs(record: Path) -> list[Path]:
    return sorted(record.parent.glob(f"{record.name}.*"))


def _rewrite_record(record: Path, header: dict[str, object], pickled: bytes) -> None:
    record.chmod(0o644)
    record.write_bytes(json.dumps(header).encode() + b"\n" + pickled)


def _read_record(record: Path) -> tuple[dict[str, object], bytes]:
    line, _, pickled = record.read_bytes().partition(b"\n")
    header = json.loads(line)
    assert isinstance(header, dict)
    return header, pickled


def test_second_open_decompresses_nothing_and_matches(tmp_path: Path) -> None:
    archives = _archives()
    spool = Spool(tmp_path / "spool")
    direct = [_snapshot(_reader(a, spool).open(_package(a))) for a in archives]
    cache = ExtractionCache(tmp_path / "cache")
    cold, cold_opened = _open_all(cache, spool, archives)
    assert (cache.hits, cache.misses) == (0, len(archives))
    assert len(cold_opened) == len(archives)
    warm_cache = ExtractionCache(tmp_path / "cache")
    warm, warm_opened = _open_all(warm_cache, Spool(tmp_path / "spool2"), archives)
    assert warm_opened == [] and (warm_cache.hits, warm_cache.misses) == (len(archives), 0)
    assert cold == direct and warm == direct
    assert len(_entries(warm_cache)) == len(archives)
    # Files only: an entry is its record and its blobs, and nothing is left over.
    assert all(path.is_file() for path in warm_cache.root.iterdir())
    blobs = [blob for entry in _entries(warm_cache) for blob in _blobs(entry)]
    assert blobs
    assert sorted(warm_cache.root.iterdir()) == sorted([*_entries(warm_cache), *blobs])
    for blob in blobs:
        assert blob.stat().st_mode & 0o777 == 0o444


def test_a_cache_on_another_file_system_holds_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool on another file system than the cache: its packs are copied in, whole."""
    archives = _archives()
    spool = Spool(tmp_path / "spool")
    unpacked = Spool(tmp_path / "direct")
    direct = [_snapshot(_reader(a, unpacked).open(_package(a))) for a in archives]

    def cross_device(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr("supermin.extraction_cache.os.link", cross_device)
    cache = ExtractionCache(tmp_path / "cache")
    cold, _ = _open_all(cache, spool, archives)
    monkeypatch.undo()
    shutil.rmtree(tmp_path / "spool")  # the copies must not depend on it
    warm_cache = ExtractionCache(tmp_path / "cache")
    warm, warm_opened = _open_all(warm_cache, Spool(tmp_path / "spool2"), archives)
    assert warm_opened == [] and warm_cache.hits == len(archives)
    assert cold == direct and warm == direct
    blobs = [blob for entry in _entries(warm_cache) for blob in _blobs(entry)]
    assert blobs
    assert all(b.stat().st_nlink == 1 and b.stat().st_mode & 0o777 == 0o444 for b in blobs)


def _truncate_blob(entry: Path) -> None:
    blob = max(_blobs(entry), key=lambda p: p.stat().st_size)
    blob.chmod(0o644)
    with blob.open("r+b") as stream:
        stream.truncate(blob.stat().st_size // 2)


def _overwrite_blob_same_size(entry: Path) -> None:
    blob = max(_blobs(entry), key=lambda p: p.stat().st_size)
    blob.chmod(0o644)
    size = blob.stat().st_size
    time.sleep(0.01)  # a later mtime, whatever the file system's granularity
    blob.write_bytes(b"\0" * size)


def _flip_pickle_byte(entry: Path) -> None:
    header, pickled = _read_record(entry)
    flipped = bytearray(pickled)
    flipped[len(flipped) // 2] ^= 0xFF
    _rewrite_record(entry, header, bytes(flipped))


def _garbage_pickle_with_its_hash(entry: Path) -> None:
    # A pickle that matches the record's checksum but does not unpickle.
    import hashlib

    header, _ = _read_record(entry)
    header["pickle_sha256"] = hashlib.sha256(b"not a pickle").hexdigest()
    _rewrite_record(entry, header, b"not a pickle")


def _remove_record(entry: Path) -> None:
    entry.unlink()


def _remove_blob(entry: Path) -> None:
    _blobs(entry)[0].unlink()


def _other_format(entry: Path) -> None:
    header, pickled = _read_record(entry)
    header["format"] = -1
    _rewrite_record(entry, header, pickled)


def _unreadable_header(entry: Path) -> None:
    _, pickled = _read_record(entry)
    entry.chmod(0o644)
    entry.write_bytes(b"{not json\n" + pickled)


def _blob_of_another_entry(entry: Path) -> None:
    # A record naming a file outside its own blobs (here: the record itself).
    header, pickled = _read_record(entry)
    blobs = header["blobs"]
    assert isinstance(blobs, list) and blobs
    blobs[0][0] = entry.name
    # With the record's own size and mtime, so that only its name gives it away.
    blobs[0][1:] = [0, 0]
    while True:
        _rewrite_record(entry, header, pickled)
        if blobs[0][1] == entry.stat().st_size:
            break
        blobs[0][1] = entry.stat().st_size
    os.utime(entry, ns=(0, 0))


@pytest.mark.parametrize(
    "damage",
    [
        _truncate_blob,
        _overwrite_blob_same_size,
        _flip_pickle_byte,
        _garbage_pickle_with_its_hash,
        _remove_record,
        _remove_blob,
        _other_format,
        _unreadable_header,
        _blob_of_another_entry,
    ],
)
def test_damaged_entry_is_a_miss_and_is_rebuilt(tmp_path: Path, damage: object) -> None:
    archive = synthetic_debs() / "pool" / "tp-busybox_1.35.0-1_amd64.deb"
    spool = Spool(tmp_path / "spool")
    direct = _snapshot(_reader(archive, spool).open(_package(archive)))
    cache = ExtractionCache(tmp_path / "cache")
    _open_all(cache, spool, [archive])
    [entry] = _entries(cache)
    assert callable(damage)
    damage(entry)
    again = ExtractionCache(tmp_path / "cache")
    [snapshot], opened = _open_all(again, spool, [archive])
    assert (again.hits, again.misses) == (0, 1) and opened == ["tp-busybox"]
    assert snapshot == direct
    # Rebuilt whole: the next open is a hit with the right bytes.
    third = ExtractionCache(tmp_path / "cache")
    [snapshot], opened = _open_all(third, spool, [archive])
    assert (third.hits, opened) == (1, []) and snapshot == direct
    root = tmp_path / "cache" / "extract"
    assert [p.name for p in root.iterdir() if p.name[0] == "."] == []
    # The damaged entry's blobs went with it (a removed record leaves its blobs to prune).
    [entry] = _entries(third)
    if damage is not _remove_record:
        assert sorted(root.iterdir()) == sorted([entry, *_blobs(entry)])


def test_origin_is_part_of_the_key(tmp_path: Path) -> None:
    archive = synthetic_debs() / "pool" / "tp-files_1.0-1_all.deb"
    spool = Spool(tmp_path / "spool")
    cache = ExtractionCache(tmp_path / "cache")
    first = cache.open(_package(archive), _reader(archive, spool))
    renamed = Package("other-name", "0", "all", "deb", "test", location=archive)
    second = cache.open(renamed, _reader(archive, spool))
    assert cache.misses == 2
    assert {e.origin for e in first.entries} == {"tp-files"}
    assert {e.origin for e in second.entries} == {"other-name"}


def test_identical_archives_opened_at_once(tmp_path: Path) -> None:
    archive = synthetic_debs() / "pool" / "tp-busybox_1.35.0-1_amd64.deb"
    spool = Spool(tmp_path / "spool")
    direct = _snapshot(_reader(archive, spool).open(_package(archive)))
    cache = ExtractionCache(tmp_path / "cache")
    results: list[tuple[object, ...]] = []

    def one() -> None:
        results.append(_snapshot(cache.open(_package(archive), _reader(archive, spool))))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [direct] * 6 and cache.hits + cache.misses == 6
    assert len(_entries(cache)) == 1
    # The losers of the race removed their blobs: one entry's files remain.
    [entry] = _entries(cache)
    assert sorted(cache.root.iterdir()) == sorted([entry, *_blobs(entry)])


def test_missing_archive_is_the_readers_error(tmp_path: Path) -> None:
    cache = ExtractionCache(tmp_path / "cache")
    missing = tmp_path / "gone_1.0_all.deb"
    with pytest.raises(Exception, match="missing"):
        cache.open(_package(missing), _reader(missing, Spool(tmp_path / "spool")))


def test_unwritable_cache_is_none(tmp_path: Path) -> None:
    assert ExtractionCache.at(None) is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert ExtractionCache.at(blocker) is None  # cannot make a directory under a file


def test_parsed_cache_detects_damage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERMIN_CACHE_DIR", str(tmp_path))
    calls: list[int] = []

    def compute() -> dict[str, int]:
        calls.append(1)
        return {"answer": 42}

    assert cached("t", "k", compute) == {"answer": 42}
    assert cached("t", "k", compute) == {"answer": 42} and len(calls) == 1
    stored = tmp_path / "t-k.pickle"
    data = bytearray(stored.read_bytes())
    data[-3] ^= 0x01  # still a loadable pickle, perhaps, but not the one stored
    stored.write_bytes(bytes(data))
    assert cached("t", "k", compute) == {"answer": 42} and len(calls) == 2
    assert cached("t", "k", compute) == {"answer": 42} and len(calls) == 2


def test_file_identity_sees_a_replaced_file(tmp_path: Path) -> None:
    index = tmp_path / "Packages"
    index.write_text("one")
    before = file_identity([index])
    stat = index.stat()
    replacement = tmp_path / "new"
    replacement.write_text("two")  # same size
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, index)
    assert index.stat().st_mtime_ns == stat.st_mtime_ns
    assert file_identity([index]) != before


def test_kernel_from_the_cache_is_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERMIN_CACHE_DIR", str(tmp_path / "cache"))
    image = tmp_path / "cache" / "extract" / f"{'ab' * 32}.0123abcd.0"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"kernel")
    (tmp_path / "out").mkdir()
    place_kernel(Kernel(image, "6.1", "test"), tmp_path / "out" / "kernel", False, Stage(tmp_path))
    kernel = tmp_path / "out" / "kernel"
    assert not kernel.is_symlink() and kernel.read_bytes() == b"kernel"


def test_prune_in_process(tmp_path: Path) -> None:
    now = time.time()
    root = tmp_path / "extract"
    root.mkdir()
    old, recent = root / ("a" * 64), root / ("b" * 64)
    for record in (old, recent):
        record.write_bytes(b"r" * 10)
        Path(f"{record}.0123abcd.0").write_bytes(b"x" * 1000)
        Path(f"{record}.0123abcd.1").write_bytes(b"x" * 100)
    orphan, young_orphan = root / f"{'c' * 64}.0123abcd.0", root / f"{'d' * 64}.0123abcd.0"
    orphan.write_bytes(b"o" * 7)
    young_orphan.write_bytes(b"o" * 7)
    leftover = root / ".tmp-xyz"
    leftover.write_bytes(b"t")
    older_format = root / "ee" / ("e" * 64)  # a directory per entry, under a fan
    (older_format / "data").mkdir(parents=True)
    (older_format / "data" / "00000000").write_bytes(b"x" * 20)
    (tmp_path / "deb-pool-1.pickle").write_bytes(b"p" * 10)
    (tmp_path / "deb-pool-2.pickle").write_bytes(b"p" * 10)
    for path, days in (
        (old, 40),
        (orphan, 2),
        (leftover, 2),
        (older_format, 40),
        (tmp_path / "deb-pool-1.pickle", 40),
    ):
        os.utime(path, (now - days * _DAY, now - days * _DAY))
    pruned = prune(tmp_path, 30, now)
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [recent.name, f"{recent.name}.0123abcd.0", f"{recent.name}.0123abcd.1", young_orphan.name]
    )
    assert not (tmp_path / "deb-pool-1.pickle").exists()
    assert (tmp_path / "deb-pool-2.pickle").exists()
    # old (record and two blobs), the orphan, the leftover, the older format's entry, a pickle
    assert (pruned.removed, pruned.freed) == (5, 1110 + 7 + 1 + 20 + 10)


# ---------------------------------------------------------------- the product, as uid 65534


@pytest.fixture
def work() -> Iterator[Path]:
    """A scratch directory with a pool (real bash and coreutils, plus tp-update 1.0)."""
    directory = scratch_dir("extraction-cache")
    pool = make_world_dir(directory / "pool")
    for deb in real_pool(["bash", "coreutils"]).glob("*.deb"):
        shutil.copyfile(deb, pool / deb.name)
        (pool / deb.name).chmod(0o644)
    build_update_debs(pool, "1.0")
    supermin_nobody(["prepare", *ROOTS, "--repo", str(pool), "-o", str(directory / "d")])
    yield directory


def _build(
    work: Path, name: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[Path, tuple[int, int] | None]:
    """Build a tar as nobody; the output and the (hits, misses) that -v reported."""
    output = work / f"{name}.tar"
    args = ["build", str(work / "d"), "--repo", str(work / "pool"), "-f", "tar"]
    proc = supermin_nobody([*args, "-o", str(output), "-v", *extra], env={**EPOCH, **(env or {})})
    found = _SUMMARY.search(proc.stderr)
    return output, (int(found[1]), int(found[2])) if found else None


def _cache_args(work: Path) -> list[str]:
    return ["--cache-dir", str(work / "cache")]


def _stored(work: Path) -> list[Path]:
    return _records(work / "cache" / "extract")


def test_rebuilds_hit_and_one_changed_archive_is_one_miss(work: Path) -> None:
    cold, counts = _build(work, "cold", *_cache_args(work))
    assert counts == (0, 15)
    warm, counts = _build(work, "warm", *_cache_args(work))
    assert counts == (15, 0)
    plain, counts = _build(work, "plain", "--no-cache")
    assert counts is None
    assert sha256(cold) == sha256(warm) == sha256(plain)
    assert len(_stored(work)) == 15

    (work / "pool" / "tp-update_1.0_all.deb").unlink()
    build_update_debs(work / "pool", "1.1")
    updated, counts = _build(work, "updated", *_cache_args(work))
    assert counts == (14, 1)
    reference, _ = _build(work, "reference", "--no-cache")
    assert sha256(updated) == sha256(reference) != sha256(cold)
    assert len(_stored(work)) == 16


@pytest.mark.parametrize("damage", [_truncate_blob, _flip_pickle_byte, _remove_record])
def test_damaged_entry_rebuilt_by_the_product(work: Path, damage: object) -> None:
    cold, _ = _build(work, "cold", *_cache_args(work))
    biggest = max(_stored(work), key=lambda entry: max(b.stat().st_size for b in _blobs(entry)))
    assert callable(damage)
    damage(biggest)
    again, counts = _build(work, "again", *_cache_args(work))
    assert counts == (14, 1)
    assert sha256(again) == sha256(cold)
    third, counts = _build(work, "third", *_cache_args(work))
    assert counts == (15, 0) and sha256(third) == sha256(cold)


def test_concurrent_builds_share_a_cache(work: Path) -> None:
    results: dict[str, tuple[Path, tuple[int, int] | None]] = {}
    errors: list[BaseException] = []

    def one(name: str) -> None:
        try:
            results[name] = _build(work, name, *_cache_args(work))
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=one, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sha256(results["a"][0]) == sha256(results["b"][0])
    assert len(_stored(work)) == 15
    assert [p.name for p in (work / "cache" / "extract").iterdir() if p.name[0] == "."] == []
    warm, counts = _build(work, "warm", *_cache_args(work))
    assert counts == (15, 0) and sha256(warm) == sha256(results["a"][0])


def test_no_cache_leaves_the_cache_alone(work: Path) -> None:
    cache = make_world_dir(work / "env-cache")
    env = {"SUPERMIN_CACHE_DIR": str(cache)}
    pool = str(work / "pool")
    supermin_nobody(
        ["prepare", *ROOTS, "--repo", pool, "-o", str(work / "d2"), "--no-cache"], env=env
    )
    _, counts = _build(work, "nocache", "--no-cache", env=env)
    assert counts is None and list(cache.iterdir()) == []
    _, counts = _build(work, "cached", env=env)  # the same run without it does write there
    assert counts == (0, 15) and list(cache.iterdir()) != []


def test_cache_options_do_not_shape_the_fingerprint(work: Path) -> None:
    _build(work, "fresh", "--if-newer", *_cache_args(work))
    for extra in (["--cache-dir", str(work / "other")], ["--no-cache"], ["--cache-dir=/x"]):
        args = ["build", str(work / "d"), "--repo", str(work / "pool"), "-f", "tar", "-v"]
        proc = supermin_nobody(
            [*args, "-o", str(work / "fresh.tar"), "--if-newer", *extra], env=EPOCH
        )
        assert "up to date" in proc.stderr, (extra, proc.stderr)


def test_prune_cache_removes_old_entries_and_keeps_recent_ones(work: Path) -> None:
    _build(work, "cold", *_cache_args(work))
    now = time.time()
    entries = _stored(work)
    old = entries[::2]
    for entry in old:
        os.utime(entry, (now - 40 * _DAY, now - 40 * _DAY))
    pickles = sorted((work / "cache").glob("*.pickle"))
    assert pickles
    os.utime(pickles[0], (now - 40 * _DAY, now - 40 * _DAY))
    stale_temp = make_world_dir(work / "cache" / "extract" / ".tmp-stale")
    fresh_temp = make_world_dir(work / "cache" / "extract" / ".tmp-fresh")
    os.utime(stale_temp, (now - 2 * _DAY, now - 2 * _DAY))

    proc = supermin_nobody(["--prune-cache", *_cache_args(work), "-v"])
    assert f"{len(old) + 2} entries" in proc.stderr, proc.stderr
    assert _stored(work) == [e for e in entries if e not in old]
    assert not pickles[0].exists() and all(p.exists() for p in pickles[1:])
    assert not stale_temp.exists() and fresh_temp.exists()
    # A shorter age: everything not used within it goes.
    supermin_nobody(["--prune-cache=0", *_cache_args(work)])
    assert _stored(work) == []
    _, counts = _build(work, "after", *_cache_args(work))
    assert counts == (0, 15)
