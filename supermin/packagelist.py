"""`--include-packagelist`: /packagelist, the appliance's packages one per line, sorted."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from supermin.backends.registry import packagelist_name
from supermin.merge import Layer
from supermin.packages import Package
from supermin.spool import Spool

PACKAGELIST = PurePosixPath("/packagelist")


def packagelist_text(packages: Iterable[Package]) -> str:
    """Each package as its format names it (dpkg's name_version_arch, rpm's NEVRA).

    Sorted bytewise, like supermin 5 (which sorts with OCaml's string compare).
    """
    names = sorted({packagelist_name(p) for p in packages}, key=lambda n: n.encode())
    return "".join(f"{name}\n" for name in names)


def packagelist_layer(packages: Iterable[Package], spool: Spool, mtime: int) -> Layer:
    return Layer([spool.file_entry(PACKAGELIST, packagelist_text(packages).encode(), 0o644, mtime)])
