"""open_packages: archives on every core, the install order worked out meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from supermin.packages import Package, PackageContents
from supermin.reading import open_packages


def _packages(tmp_path: Path, installed: bool = False) -> list[Package]:
    packages = []
    for number, name in enumerate(["a", "b", "c", "d"]):
        archive = tmp_path / f"{name}.deb"
        archive.write_bytes(b"x" * (number + 1))  # sizes set the reading order
        packages.append(
            Package(name, "1", "all", "deb", "test", None if installed else archive, installed)
        )
    return packages


class _Reader:
    """Opens nothing until the order has been asked for, and records what it opened."""

    def __init__(self, ordering: threading.Event) -> None:
        self.ordering = ordering
        self.opened: list[str] = []

    def open(self, package: Package) -> PackageContents:
        if not package.installed:
            assert self.ordering.wait(10), "the order was not worked out while reading"
        self.opened.append(package.name)
        return PackageContents(entries=[], control_files={"name": package.name.encode()})


def test_the_order_is_worked_out_while_the_archives_are_read(tmp_path: Path) -> None:
    packages = _packages(tmp_path)
    ordering = threading.Event()
    reader = _Reader(ordering)

    def order() -> Sequence[Package]:
        ordering.set()  # the readers were waiting for this: they had started
        return [packages[2], packages[0], packages[3], packages[1]]

    opened = open_packages(packages, reader, jobs=2, order=order)  # type: ignore[arg-type]
    assert [p.name for p, _ in opened] == ["c", "a", "d", "b"]
    assert [c.control_files["name"] for _, c in opened] == [b"c", b"a", b"d", b"b"]
    assert sorted(reader.opened) == ["a", "b", "c", "d"]


def test_installed_packages_are_copied_in_the_order(tmp_path: Path) -> None:
    packages = _packages(tmp_path, installed=True)
    reader = _Reader(threading.Event())
    opened = open_packages(
        packages,
        reader,  # type: ignore[arg-type]
        jobs=2,
        order=lambda: [packages[3], packages[1], packages[0], packages[2]],
    )
    assert reader.opened == ["d", "b", "a", "c"]  # hardlinks are recognised by first sight
    assert [p.name for p, _ in opened] == ["d", "b", "a", "c"]


def test_an_order_of_other_packages_is_refused(tmp_path: Path) -> None:
    packages = _packages(tmp_path)
    ordering = threading.Event()
    ordering.set()
    with pytest.raises(ValueError, match="exactly the packages given"):
        open_packages(
            packages,
            _Reader(ordering),  # type: ignore[arg-type]
            jobs=2,
            order=lambda: packages[:3],
        )
