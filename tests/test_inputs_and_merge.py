"""supermin.d sniffing and the merge step, on small inputs made here."""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from supermin.content import read_content
from supermin.entry import EntryKind, FileEntry, clean_path, image_path
from supermin.errors import ArchiveError, InputError
from supermin.hostfiles.hostfs import HostFiles
from supermin.inputs import read_inputs, tarball_entries
from supermin.merge import Layer, exclude_matcher, merge
from supermin.spool import Spool


def _tar(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.uname = len(data), 0o640, 7, "lp"
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.mark.parametrize("compressor", ["cat", "gzip", "xz", "zstd", "bzip2"])
def test_tarballs_are_sniffed_by_content_whatever_the_compression(
    tmp_path: Path, compressor: str
) -> None:
    packed = subprocess.run(
        [compressor, "-c"] if compressor != "cat" else ["cat"],
        input=_tar({"etc/motd": b"hi\n"}),
        capture_output=True,
        check=True,
    ).stdout
    (tmp_path / "init.img").write_bytes(packed)  # the name says nothing
    appliance = read_inputs([tmp_path])
    assert appliance.tarballs == [tmp_path / "init.img"]
    [entry] = tarball_entries(tmp_path / "init.img", Spool(tmp_path / "spool"))
    assert (entry.path, entry.mode, entry.uid, entry.user) == (
        PurePosixPath("/etc/motd"),
        0o640,
        7,
        "lp",
    )
    assert read_content(entry) == b"hi\n"


def test_text_inputs_are_packages_hostfiles_and_excludes(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("bash\ncoreutils\n")
    (tmp_path / "b").write_text("/etc/ld.so.cache\n/usr/share/augeas/lenses/*.aug\n")
    (tmp_path / "c").write_text("-/usr/share/doc/*\n-/usr/share/man/*\n")
    (tmp_path / "d").write_text("bash\nhello\n")
    (tmp_path / "empty").write_text("")
    appliance = read_inputs([tmp_path])
    assert appliance.packages == ["bash", "coreutils", "hello"]
    assert appliance.hostfiles == ["/etc/ld.so.cache", "/usr/share/augeas/lenses/*.aug"]
    assert appliance.excludes == ["/usr/share/doc/*", "/usr/share/man/*"]


def test_binary_junk_and_corrupt_tarball_are_errors(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"\0\1\2garbage")
    with pytest.raises(InputError, match="junk"):
        read_inputs([tmp_path])
    (tmp_path / "junk").unlink()
    (tmp_path / "broken.tar.gz").write_bytes(
        subprocess.run(
            ["gzip", "-c"], input=_tar({"x": os.urandom(50_000)}), capture_output=True, check=True
        ).stdout[:200]
    )
    [tarball] = read_inputs([tmp_path]).tarballs
    with pytest.raises(ArchiveError, match="broken.tar.gz"):
        tarball_entries(tarball, Spool(tmp_path / "spool"))


def _file(path: str, origin: str = "pkg", mtime: int = 2_000_000_000) -> FileEntry:
    return FileEntry(PurePosixPath(path), EntryKind.FILE, 0o644, mtime=mtime, origin=origin)


def _by_path(entries: list[FileEntry]) -> dict[str, FileEntry]:
    return {str(e.path): e for e in entries}


def test_merge_orders_dedups_adds_parents_and_clamps_mtimes() -> None:
    merged = merge(
        [
            Layer([_file("/usr/bin/b", "first"), _file("/usr/bin/a")]),
            Layer([_file("/usr/bin/b", "second")]),
        ],
        source_date_epoch=1_000,
    )
    assert [str(e.path) for e in merged] == ["/", "/usr", "/usr/bin", "/usr/bin/a", "/usr/bin/b"]
    assert _by_path(merged)["/usr/bin/b"].origin == "second"
    assert _by_path(merged)["/usr"].kind is EntryKind.DIR
    assert all(e.mtime <= 1_000 for e in merged)


def test_merge_moves_entries_under_directory_symlinks_and_excludes() -> None:
    link = FileEntry(PurePosixPath("/lib"), EntryKind.SYMLINK, 0o777, target="usr/lib")
    merged = _by_path(
        merge(
            [
                Layer([_file("/lib/x/libx.so"), _file("/usr/share/doc/x/README")], excludable=True),
                Layer([link]),
            ],
            excludes=["/usr/share/doc/*"],
        )
    )
    assert "/usr/lib/x/libx.so" in merged and "/lib/x/libx.so" not in merged
    assert merged["/lib"].kind is EntryKind.SYMLINK
    assert "/usr/share/doc/x/README" not in merged


def test_hardlink_to_an_excluded_file_becomes_the_file(tmp_path: Path) -> None:
    content = tmp_path / "blob"
    content.write_bytes(b"data")
    original = FileEntry(
        PurePosixPath("/usr/share/doc/a"), EntryKind.FILE, 0o644, size=4, content=content
    )
    link = FileEntry(
        PurePosixPath("/usr/bin/b"), EntryKind.HARDLINK, 0o644, target="/usr/share/doc/a"
    )
    merged = _by_path(
        merge([Layer([original, link], excludable=True)], excludes=["/usr/share/doc/*"])
    )
    assert merged["/usr/bin/b"].kind is EntryKind.FILE
    assert merged["/usr/bin/b"].content == content


def test_merge_orders_by_path_components_not_by_text(tmp_path: Path) -> None:
    """The path /a/b sorts before /a-b ('/' is after '-' as text, not as a component):
    the file of a hardlink set must be the first in that order, written before its links."""
    content = tmp_path / "blob"
    content.write_bytes(b"data")
    original = FileEntry(PurePosixPath("/a-b"), EntryKind.FILE, 0o644, size=4, content=content)
    link = FileEntry(PurePosixPath("/a/b"), EntryKind.HARDLINK, 0o644, target="/a-b")
    merged = merge([Layer([original, link, _file("/a/c"), _file("/a.d")])])
    assert [str(e.path) for e in merged] == ["/", "/a", "/a/b", "/a/c", "/a-b", "/a.d"]
    assert merged[2].kind is EntryKind.FILE and merged[2].content == content
    assert (merged[4].kind, merged[4].target) == (EntryKind.HARDLINK, "/a/b")
    assert all(isinstance(e.path, PurePosixPath) for e in merged)


def test_merge_order_is_the_order_of_path_components_for_any_names() -> None:
    """Names holding characters below '/' (control characters, space, '!', '-', '.'),
    prefixes of each other and non-ASCII: the merged order is PurePosixPath.parts order."""
    names = ["a", "a b", "a!", "a-b", "a.b", "a\x01", "ab", "é", "a\tz", "B", "0"]
    paths = {"/" + "/".join(parts) for parts in itertools.product(names, repeat=2)}
    paths |= {"/" + name for name in names}
    entries = [
        FileEntry(PurePosixPath(p), EntryKind.DIR, 0o755) if p.count("/") == 1 else _file(p)
        for p in sorted(paths, reverse=True)
    ]
    merged = [e.path for e in merge([Layer(entries)])]
    assert merged == sorted(merged, key=lambda p: p.parts)
    assert len(merged) == len(paths) + 1  # and the root


def test_file_where_a_directory_is_needed_is_an_error() -> None:
    with pytest.raises(ArchiveError, match="/etc"):
        merge([Layer([_file("/etc"), _file("/etc/passwd")])])


@pytest.mark.parametrize(
    "name",
    ["/", "usr", "/usr/bin/", "./usr//lib/./x86_64-linux-gnu/libc.so.6", "etc/ünïcode", "a/b c/d"],
)
def test_image_paths_built_from_components_equal_parsed_ones(name: str) -> None:
    """image_path skips pathlib's parsing: the result must behave exactly as a parsed path."""
    fast = image_path(name)
    parsed = PurePosixPath("/" + name.strip("/")).relative_to("/")
    parsed = PurePosixPath("/") / parsed
    assert fast == parsed and hash(fast) == hash(parsed) and str(fast) == str(parsed)
    assert fast.parts == parsed.parts and fast.parent == parsed.parent
    assert fast.name == parsed.name and fast / "x" == parsed / "x"
    assert sorted([fast, PurePosixPath("/m")]) == sorted([parsed, PurePosixPath("/m")])
    concrete = clean_path(Path, list(parsed.parts[1:]))
    assert type(concrete) is type(Path("/")) and concrete == Path(str(parsed))
    assert str(concrete) == str(parsed) and concrete.exists() == Path(str(parsed)).exists()


def test_image_path_refuses_dot_dot() -> None:
    with pytest.raises(ArchiveError, match=r"'\.\.' in a path"):
        image_path("usr/../../etc/shadow", origin="evil.deb")


def _modules_dir(root: Path) -> Path:
    """A kernel's modules directory as a host has one: nested dirs, symlinks, a hardlink."""
    top = root / "6.1.0-9-amd64"
    (top / "kernel" / "drivers" / "net").mkdir(parents=True)
    (top / "kernel" / "fs").mkdir()
    (top / "kernel" / "drivers" / "net" / "virtio_net.ko").write_bytes(b"\x7fELF net")
    (top / "kernel" / "fs" / "ext4.ko").write_bytes(b"\x7fELF ext4")
    os.link(top / "kernel" / "fs" / "ext4.ko", top / "kernel" / "drivers" / "alias.ko")
    (top / "modules.dep").write_text("kernel/fs/ext4.ko:\n")
    (top / "build").symlink_to("/usr/src/linux-headers-6.1.0-9-amd64")
    (top / "source").symlink_to("build")
    return top


def _host_system(usr_merged: bool, extra: list[FileEntry], epoch: int | None) -> list[FileEntry]:
    def d(path: str) -> FileEntry:
        return FileEntry(PurePosixPath(path), EntryKind.DIR, 0o755, mtime=50)

    layer = [d("/"), d("/usr"), d("/usr/lib"), d("/etc"), *extra]
    layer.append(FileEntry(PurePosixPath("/etc/hostname"), EntryKind.FILE, 0o644, mtime=60))
    if usr_merged:
        layer.append(FileEntry(PurePosixPath("/lib"), EntryKind.SYMLINK, 0o777, target="usr/lib"))
    else:
        layer.append(d("/lib"))
    return merge([Layer(layer)], (), epoch)  # as the build's first merge


@pytest.mark.parametrize("usr_merged", [True, False], ids=["merged-usr", "split-usr"])
@pytest.mark.parametrize(
    "extra",
    [
        [],
        [FileEntry(PurePosixPath("/usr/lib/modules"), EntryKind.DIR, 0o700, mtime=7)],
        # Something already where the modules land: the full merge decides.
        [FileEntry(PurePosixPath("/usr/lib/modules/6.1.0-9-amd64/extra/x.ko"), EntryKind.FILE, 0)],
    ],
    ids=["no-modules-dir", "modules-dir", "overlap"],
)
@pytest.mark.parametrize("epoch", [None, 55])
def test_merge_subtree_equals_the_full_merge(
    tmp_path: Path, usr_merged: bool, extra: list[FileEntry], epoch: int | None
) -> None:
    from supermin.hostfiles.hostfs import HostFiles
    from supermin.merge import lands_at, merge_subtree

    modules = _modules_dir(tmp_path)
    entries = _host_system(usr_merged, extra, epoch)
    wanted = PurePosixPath("/lib/modules/6.1.0-9-amd64")
    at = lands_at(entries, wanted)
    assert at == (PurePosixPath("/usr") / wanted.relative_to("/") if usr_merged else wanted)
    spliced = merge_subtree(entries, HostFiles().tree(modules, at, "kernel"), at, epoch)
    full = merge([Layer(entries), Layer(HostFiles().tree(modules, wanted, "kernel"))], (), epoch)
    assert spliced == full
    assert str(at / "kernel/fs/ext4.ko") in {str(e.path) for e in spliced}


def test_merge_subtree_under_a_file_is_the_full_merges_error(tmp_path: Path) -> None:
    from supermin.hostfiles.hostfs import HostFiles
    from supermin.merge import merge_subtree

    modules = _modules_dir(tmp_path)
    blocker = FileEntry(PurePosixPath("/lib"), EntryKind.FILE, 0o644)
    entries = merge([Layer([blocker])])
    at = PurePosixPath("/lib/modules/6.1.0-9-amd64")
    with pytest.raises(ArchiveError, match=r"needs /lib to be a directory"):
        merge_subtree(entries, HostFiles().tree(modules, at, "kernel"), at)


# The excludefiles of Debian's libguestfs appliance (supermin.d/excludefiles), in part.
GUESTFS_EXCLUDES = [
    "/boot/*",
    "/lib/modules/*",
    "/usr/lib/modules/*",
    "/usr/lib/locale/*",
    "/usr/share/doc/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/man/*",
    "/usr/share/lintian/*",
    "/var/log/*.log*",
]


def _same_files(entries: list[FileEntry]) -> list[tuple[FileEntry, tuple[int, int] | None]]:
    """Entries with their content named by inode: a hardlinked file's data may be
    read through any of its host paths."""
    return [
        (
            dataclasses.replace(e, content=None),
            None if e.content is None else (e.content.stat().st_dev, e.content.stat().st_ino),
        )
        for e in entries
    ]


def test_excluded_package_paths_are_not_looked_at(tmp_path: Path) -> None:
    """HostFiles.entries skips what the appliance excludes; merge's result is the same,
    a file kept elsewhere through a hardlink included."""
    root = tmp_path / "root"
    (root / "usr/share/doc/p").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    readme = root / "usr/share/doc/p/README"
    readme.write_text("text\n")
    os.link(readme, root / "usr/bin/tool")
    os.link(readme, root / "usr/bin/tool2")
    names = ["/usr", "/usr/share", "/usr/share/doc", "/usr/share/doc/p"]
    names += ["/usr/share/doc/p/README", "/usr/bin", "/usr/bin/tool", "/usr/bin/tool2"]
    excludes = ["/usr/share/doc/*"]
    plain = HostFiles(root).entries(names, "p")
    skipping = HostFiles(root, exclude_matcher(excludes)).entries(names, "p")
    assert [str(e.path) for e in skipping] == [
        "/usr",
        "/usr/share",
        "/usr/share/doc",
        "/usr/bin",
        "/usr/bin/tool",
        "/usr/bin/tool2",
    ]
    merged = merge([Layer(skipping, excludable=True)], excludes)
    assert _same_files(merged) == _same_files(merge([Layer(plain, excludable=True)], excludes))
    tools = {str(e.path): e for e in merged if e.path.parent == PurePosixPath("/usr/bin")}
    assert tools["/usr/bin/tool"].kind is EntryKind.FILE
    assert tools["/usr/bin/tool2"].target == "/usr/bin/tool"


def test_excluding_early_on_this_hosts_packages() -> None:
    """The same on real dpkg file lists: this machine's installed bash, coreutils, libc6."""
    info = Path("/var/lib/dpkg/info")
    layers_plain, layers_skipping = [], []
    plain_host, skipping_host = HostFiles(), HostFiles(excluded=exclude_matcher(GUESTFS_EXCLUDES))
    for package in ("bash", "coreutils", "libc6:amd64", "dpkg"):
        listed = next(info.glob(f"{package}.list"), None) or next(info.glob(f"{package}:*.list"))
        names = listed.read_text().splitlines()
        layers_plain.append(Layer(plain_host.entries(names, package), excludable=True))
        layers_skipping.append(Layer(skipping_host.entries(names, package), excludable=True))
    pairs = zip(layers_plain, layers_skipping, strict=True)
    skipped = sum(len(list(a.entries)) - len(list(b.entries)) for a, b in pairs)
    assert skipped > 100  # manuals, documentation and locales
    assert _same_files(merge(layers_skipping, GUESTFS_EXCLUDES)) == _same_files(
        merge(layers_plain, GUESTFS_EXCLUDES)
    )
