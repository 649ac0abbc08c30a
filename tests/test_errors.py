"""Bad input: one clear line, a non-zero exit, nothing half-built, nothing written outside."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from support.debdata import build_deb, real_pool
from support.product import build_in, listing, prepare_in, scratch_dir, supermin_nobody


def _assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if not line.startswith("supermin: warning:")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("supermin: error: "), stderr
    for needle in needles:
        assert needle in lines[0], stderr


def _names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_unknown_package_is_an_error_only_when_none_is_known() -> None:
    pool = real_pool(["hello"])
    work = scratch_dir("unknown")
    result = supermin_nobody(
        ["prepare", "nosuch-pkg", "--repo", str(pool), "-o", str(work / "d")], check=False
    )
    assert result.returncode != 0
    _assert_one_line_error(result.stderr, "nosuch-pkg")
    assert _names(work) == set()
    result = supermin_nobody(
        ["prepare", "hello", "nosuch-pkg", "--repo", str(pool), "-o", str(work / "d")]
    )
    assert "warning: package nosuch-pkg is not known" in result.stderr
    assert (work / "d/packages").read_text() == "hello\n"


def test_unsatisfiable_dependency_names_requirement_and_chain() -> None:
    work = scratch_dir("unsat")
    pool = work / "pool"
    build_deb(pool, "tp-top", "1.0", depends="tp-middle")
    build_deb(pool, "tp-middle", "1.0", depends="tp-leaf (>= 2.0)")
    build_deb(pool, "tp-leaf", "1.0")
    result = supermin_nobody(
        ["prepare", "tp-top", "--repo", str(pool), "-o", str(work / "d")], check=False
    )
    assert result.returncode != 0
    _assert_one_line_error(result.stderr, "tp-leaf (>= 2.0)", "tp-top -> tp-middle")
    assert _names(work) == {"pool"}


def test_truncated_deb_fails_build_and_keeps_previous_output() -> None:
    work = scratch_dir("corrupt")
    pool = work / "pool"
    shutil.copytree(real_pool(["hello"]), pool)
    prepare_in(work, ["hello"], pool)
    supermin_nobody(
        ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot", "-o", str(work / "c")]
    )
    before = listing(work / "c")
    victim = next(pool.glob("hello_*.deb"))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 2 // 3])
    result = supermin_nobody(
        ["build", str(work / "d"), "--repo", str(pool), "-f", "chroot", "-o", str(work / "c")],
        check=False,
    )
    assert result.returncode != 0
    _assert_one_line_error(result.stderr, str(victim), "corrupt or truncated")
    assert listing(work / "c") == before
    assert _names(work) == {"pool", "d", "c", "c.mtree"}


def test_garbage_deb_is_named() -> None:
    work = scratch_dir("garbage")
    (work / "pool").mkdir()
    (work / "pool" / "junk_1.0_all.deb").write_bytes(os.urandom(4096))
    os.chmod(work / "pool", 0o755)
    os.chmod(work / "pool" / "junk_1.0_all.deb", 0o644)
    result = supermin_nobody(
        ["prepare", "junk", "--repo", str(work / "pool"), "-o", str(work / "d")], check=False
    )
    assert result.returncode != 0
    _assert_one_line_error(result.stderr, "junk_1.0_all.deb")
    assert not (work / "d").exists()


def test_unreadable_source_and_missing_source() -> None:
    work = scratch_dir("unreadable")
    secret = work / "secret"
    secret.mkdir(mode=0o700)
    os.chmod(secret, 0o700)
    result = supermin_nobody(
        ["prepare", "hello", "--repo", str(secret), "-o", str(work / "d")], check=False
    )
    assert result.returncode != 0
    _assert_one_line_error(result.stderr, str(secret))
    result = supermin_nobody(
        ["prepare", "hello", "--repo", str(work / "nope"), "-o", str(work / "d")], check=False
    )
    _assert_one_line_error(result.stderr, "does not exist")
    assert _names(work) == {"secret"}


def test_output_not_writable() -> None:
    pool = real_pool(["hello"])
    result = supermin_nobody(
        ["prepare", "hello", "--repo", str(pool), "-o", "/var/lib/supermin-test-no-such/d"],
        check=False,
    )
    assert result.returncode != 0
    _assert_one_line_error(result.stderr, "cannot write output")
    readonly = scratch_dir("readonly")
    os.chmod(readonly, 0o755)  # owned by root: nobody may not create anything in it
    result = supermin_nobody(
        ["prepare", "hello", "--repo", str(pool), "-o", str(readonly / "d")], check=False
    )
    _assert_one_line_error(result.stderr, "cannot write output", str(readonly / "d"))
    assert _names(readonly) == set()


def _hostile_deb(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A .deb whose data.tar holds exactly `members` (built by hand: dpkg-deb refuses these)."""

    def tar_bytes(items: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for info, data in items:
                info.size = len(data) if info.isreg() else 0
                tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
        return raw.getvalue()

    control = tarfile.TarInfo("./control")
    control_text = b"Package: tp-hostile\nVersion: 1.0\nArchitecture: all\nMaintainer: x <x@y>\n"
    control_text += b"Description: hostile\n"
    parts = path.parent / f".{path.name}.parts"
    parts.mkdir(parents=True)
    (parts / "debian-binary").write_bytes(b"2.0\n")
    (parts / "control.tar.gz").write_bytes(tar_bytes([(control, control_text)]))
    (parts / "data.tar.gz").write_bytes(tar_bytes(members))
    subprocess.run(
        ["ar", "qc", str(path), "debian-binary", "control.tar.gz", "data.tar.gz"],
        cwd=parts,
        check=True,
    )
    shutil.rmtree(parts)
    os.chmod(path, 0o644)
    return path


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, b"owned\n"


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, b""


def test_dotdot_member_is_refused() -> None:
    work = scratch_dir("dotdot")
    _hostile_deb(
        work / "pool" / "tp-hostile_1.0_all.deb", [_file("./usr/../../../escaped-by-dotdot")]
    )
    os.chmod(work / "pool", 0o755)
    prepare_in(work, ["tp-hostile"], work / "pool")
    result = build_in(work, work / "pool", check=False)
    assert result.returncode != 0
    _assert_one_line_error(result.stderr, "'..'", "tp-hostile_1.0_all.deb")
    assert _names(work) == {"pool", "d"}
    assert not (work.parent / "escaped-by-dotdot").exists()


def test_symlink_escape_stays_inside_the_output() -> None:
    work = scratch_dir("escape")
    outside = work / "outside"
    outside.mkdir(mode=0o777)
    os.chmod(outside, 0o777)
    _hostile_deb(
        work / "pool" / "tp-hostile_1.0_all.deb",
        [
            _symlink("./etc", str(outside)),
            _symlink("./up", "../../../../../../.."),
            _file("./etc/evil"),
            _file("./up" + str(outside) + "/evil2"),
        ],
    )
    os.chmod(work / "pool", 0o755)
    prepare_in(work, ["tp-hostile"], work / "pool")
    build_in(work, work / "pool")
    assert list(outside.iterdir()) == []
    inside = work / "c" / str(outside).lstrip("/")
    assert (inside / "evil").read_text() == "owned\n"
    assert (inside / "evil2").read_text() == "owned\n"
    assert (work / "c/etc").is_symlink()
