"""Find the kernel that boots an appliance (DESIGN.md §6).

First match wins: $SUPERMIN_KERNEL (with $SUPERMIN_KERNEL_VERSION and
$SUPERMIN_MODULES), --kernel, a kernel the appliance itself holds (a kernel
package such as linux-image-amd64 or kernel-core puts /boot/vmlinuz-VERSION or
/lib/modules/VERSION/vmlinuz among the entries, so a container without /boot
still gets one), then the host's (or the --sysroot's) /lib/modules/*/vmlinuz
and /boot/vmlinu?-*, newest first, for the target architecture. When nothing
usable is found, one KernelError names every place looked at.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from supermin.content import Content
from supermin.entry import EntryKind, FileEntry
from supermin.errors import KernelError

# Kernel release names carry one of these when they name an architecture at all.
_ARCH_WORDS = {
    "x86_64": {"x86_64", "amd64"},
    "aarch64": {"aarch64", "arm64"},
    "i686": {"i386", "i486", "i586", "i686", "686"},
    "armv7l": {"armv7hl", "armv7l", "armmp", "armhf"},
    "ppc64le": {"ppc64le", "ppc64el", "powerpc64le"},
    "s390x": {"s390x"},
    "riscv64": {"riscv64"},
}
# How the hint names the kernel package (Debian's metapackage, Fedora's package).
_DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "686", "ppc64le": "powerpc64le"}

_IMAGE_PATTERNS = ("/lib/modules/*/vmlinuz", "/usr/lib/modules/*/vmlinuz", "/boot/vmlinu?-*")
_IN_IMAGE = re.compile(r"^/boot/vmlinu[xz]-(?P<a>.+)$|^(?:/usr)?/lib/modules/(?P<b>[^/]+)/vmlinuz$")


@dataclass(frozen=True, slots=True)
class Kernel:
    image: Path  # a readable file on the build machine (host file or spooled package member)
    version: str | None
    origin: str  # where it was found, for messages
    modules: Path | None = None  # its modules on the build machine
    modules_in_image: PurePosixPath | None = None  # or inside the appliance
    image_span: tuple[int, int] | None = None  # (offset, size) when `image` is a spool pack

    @property
    def content(self) -> Content:
        if self.image_span is None:
            return Content(self.image)
        return Content(self.image, *self.image_span)


def modules_place(kernel: Kernel) -> PurePosixPath:
    """/lib/modules/VERSION: host modules' place before the appliance's symlinks move it."""
    assert kernel.modules is not None
    return PurePosixPath("/lib/modules") / (kernel.version or kernel.modules.name)


@dataclass(frozen=True)
class KernelSearch:
    """Everything discovery looks at besides the appliance's own entries."""

    environ: Mapping[str, str] = field(default_factory=dict)
    option: Path | None = None  # --kernel
    host_root: Path = Path("/")  # / or --sysroot: where the host's kernels are
    arch: str | None = None  # --host-cpu; None for this machine's


def arch_words(arch: str | None) -> set[str]:
    machine = arch or platform.machine()
    for words in _ARCH_WORDS.values():
        if machine in words:
            return words
    return {machine}


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders release names as humans do: 6.10.0 after 6.9.12, 6.1.0-56 after 6.1.0-9."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"(\d+)", version)
        if part
    )


def image_version(path: Path) -> str | None:
    """The release named in an x86 bzImage's setup header, as `file(1)` shows it."""
    try:
        with path.open("rb") as image:
            header = image.read(0x210)
            if len(header) < 0x210 or header[0x202:0x206] != b"HdrS":
                return None
            offset = int.from_bytes(header[0x20E:0x210], "little")
            image.seek(offset + 0x200)
            text = image.read(256).split(b"\0", 1)[0].decode("ascii", errors="replace")
    except OSError:
        return None
    return text.split(" ", 1)[0] or None


def _architecture_ok(version: str, words: set[str]) -> bool:
    """Whether a release names the target architecture, or none at all."""
    parts = set(re.split(r"[-.+~]", version))
    if parts & words:
        return True
    return not any(parts & other for other in _ARCH_WORDS.values())


def _explicit(path: Path, what: str, version: str | None, modules: str | None) -> Kernel:
    if not path.is_file():
        raise KernelError(f"{what} is {path}, which is not a file")
    if not os.access(path, os.R_OK):
        raise KernelError(f"{what} is {path}, which this user cannot read")
    found = version or image_version(path)
    return Kernel(path, found, what, modules=Path(modules) if modules else None)


def _from_entries(entries: Iterable[FileEntry]) -> Kernel | None:
    by_path = {e.path: e for e in entries}
    found: list[tuple[tuple[object, ...], Kernel]] = []
    for entry in by_path.values():
        match = _IN_IMAGE.match(str(entry.path))
        if match is None:
            continue
        data = by_path.get(PurePosixPath(entry.target or "")) if entry.target else entry
        if data is None or data.kind is not EntryKind.FILE or data.content is None:
            continue  # a symlink such as /boot/vmlinuz -> vmlinuz-6.1.0-50-amd64
        version = match["a"] or match["b"]
        modules = (PurePosixPath(p) / version for p in ("/lib/modules", "/usr/lib/modules"))
        kernel = Kernel(
            data.content,
            version,
            f"{entry.path} of package {entry.origin}",
            modules_in_image=next((m for m in modules if m in by_path), None),
            image_span=None if data.content_offset is None else (data.content_offset, data.size),
        )
        # Newest first; of one release, the compressed image (vmlinuz) over vmlinux.
        found.append(((version_key(version), entry.path.name.startswith("vmlinuz")), kernel))
    return max(found, key=lambda item: item[0])[1] if found else None


@dataclass
class _HostScan:
    readable: list[tuple[str, Path]] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)
    other_arch: list[Path] = field(default_factory=list)


def _scan_host(root: Path, words: set[str]) -> _HostScan:
    scan = _HostScan()
    seen: set[str] = set()
    prefix = str(root).rstrip("/")
    for pattern in _IMAGE_PATTERNS:
        for name in sorted(glob.glob(prefix + pattern)):
            path = Path(name)
            real = os.path.realpath(path)
            if real in seen or not path.is_file() or "-rescue-" in path.name:
                continue
            seen.add(real)
            version = path.name.split("-", 1)[1] if path.name != "vmlinuz" else path.parent.name
            if not _architecture_ok(version, words):
                scan.other_arch.append(path)
            elif os.access(path, os.R_OK):
                scan.readable.append((version, path))
            else:
                scan.unreadable.append(path)
    scan.readable.sort(key=lambda item: version_key(item[0]), reverse=True)
    return scan


def _host_modules(root: Path, version: str) -> Path | None:
    for base in ("lib/modules", "usr/lib/modules"):
        if (root / base / version).is_dir():
            return root / base / version
    return None


def _describe(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return str(path)
    return f"{path} (mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid})"


def find_kernel(search: KernelSearch, entries: Sequence[FileEntry]) -> Kernel:
    env = search.environ
    if env.get("SUPERMIN_KERNEL"):
        return _explicit(
            Path(env["SUPERMIN_KERNEL"]),
            "SUPERMIN_KERNEL",
            env.get("SUPERMIN_KERNEL_VERSION") or None,
            env.get("SUPERMIN_MODULES") or None,
        )
    if search.option is not None:
        return _explicit(search.option, "--kernel", None, None)
    packaged = _from_entries(entries)
    if packaged is not None:
        return packaged
    words = arch_words(search.arch)
    root = search.host_root
    scan = _scan_host(root, words)
    if scan.readable:
        version, path = scan.readable[0]
        return Kernel(path, version, f"host {path}", modules=_host_modules(root, version))
    raise _not_found(search, scan, words)


def _not_found(search: KernelSearch, scan: _HostScan, words: set[str]) -> KernelError:
    machine = search.arch or platform.machine()
    where = str(search.host_root).rstrip("/")
    host = ", ".join(where + pattern for pattern in _IMAGE_PATTERNS)
    if scan.unreadable:
        found = "only unreadable ones: " + ", ".join(_describe(p) for p in scan.unreadable)
    elif scan.other_arch:
        found = f"none for {machine}, only {', '.join(map(str, scan.other_arch))}"
    else:
        found = "none"
    canonical = next((arch for arch, names in _ARCH_WORDS.items() if names == words), machine)
    package = f"linux-image-{_DEB_ARCH.get(canonical, canonical)}"
    hint = f"set SUPERMIN_KERNEL=FILE, pass --kernel FILE or add {package} (Debian) or "
    hint += "kernel-core (Fedora) to the packages"
    if scan.unreadable:
        hint = f"make the kernel readable (e.g. chmod 0644 {scan.unreadable[0]}), or {hint}"
    return KernelError(
        "no usable kernel: looked at $SUPERMIN_KERNEL (not set), --kernel (not given), "
        "the appliance's files for a kernel package's /boot/vmlinu?-* or "
        f"/lib/modules/*/vmlinuz (none), and the host's {host} ({found})",
        hint,
    )
