"""RPM package data for the supermin tests.

- real_rpms(): the 24 real packages stored in shared/testdata/rpm/real
  (SOURCES.md there says what each one covers);
- synthetic_rpms(): the feature-complete set make-rpms.sh builds, made once into
  the shared test cache (cache_root()/synthetic-rpms) and reused while the script
  is unchanged, like debdata.synthetic_debs();
- write_rpm(): a tiny writer of hand-made packages for what no real or rpmbuild
  package can cheaply show (the stripped cpio payload of packages with files of
  4 GiB or more, damaged headers).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

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
