"""benchmarks/run.py --quick: every comparison runs and lands in all three outputs.

A smoke test of the harness, not of speed: no figure is compared with anything.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support.debdata import real_pool
from support.product import scratch_dir

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
COMPARISONS = [
    "prepare-cold",
    "prepare-cached",
    "rpm-resolve",
    "guestfs-ext2",
    "if-newer",
    "pool-chroot-cold",
    "pool-chroot-warm",
    "ext2-vs-mke2fs",
    "ext2-vs-genext2fs",
    "initrd-zstd",
    "peak-memory",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run() -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = scratch_dir("bench")
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return out, proc


@pytest.fixture(scope="module")
def document(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> dict[str, Any]:
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr
    loaded: dict[str, Any] = json.loads((out / "results.json").read_text())
    return loaded


def _numbers(summary: dict[str, Any] | None) -> list[float]:
    assert summary is not None
    samples = summary["samples"]
    assert samples and all(isinstance(s, int | float) and s >= 0 for s in samples)
    assert summary["min"] <= summary["median"] <= summary["max"]
    return list(samples)


def test_every_comparison_has_samples_or_a_reason(document: dict[str, Any]) -> None:
    rows = {row["id"]: row for row in document["comparisons"]}
    assert list(rows) == COMPARISONS
    assert document["meta"]["quick"] is True and document["meta"]["runs"] == 1
    for name, row in rows.items():
        assert row["error"] is None, (name, row["error"])
        if row["skipped"]:
            assert "not installed" in row["skipped"], name
            continue
        assert len(_numbers(row["ours"])) == 1, name
        assert len(_numbers(row["peer_result"])) == 1, name
        assert isinstance(row["ratio"], float) and row["ratio"] > 0, name
        assert isinstance(row["met"], bool), name
        assert row["target"]["text"].startswith("≤"), name


def test_skips_are_announced(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]], document: dict[str, Any]
) -> None:
    _, proc = quick_run
    for row in document["comparisons"]:
        if row["skipped"]:
            assert f"benchmark: skipping {row['id']}: {row['skipped']}" in proc.stderr


def test_markdown_lists_every_comparison(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]], document: dict[str, Any]
) -> None:
    out, _ = quick_run
    table = [
        line for line in (out / "results.md").read_text().splitlines() if line.startswith("| ")
    ]
    header, rule, *rows = table
    assert "ours/peer" in header and "target" in header and set(rule) <= set("|-: ")
    assert len(rows) == len(COMPARISONS)
    for line, comparison in zip(rows, document["comparisons"], strict=True):
        assert comparison["work"] in line and comparison["target"]["text"] in line
        assert line.replace("\\|", "").count("|") == 9  # eight cells: no stray | in them


def test_chart_is_a_png(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = quick_run
    chart = (out / "results.png").read_bytes()
    assert chart.startswith(PNG_MAGIC) and len(chart) > 10_000
    assert chart[12:16] == b"IHDR"


def _load(path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


def _harness(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _load(RUN, "bench_run", monkeypatch)


def test_a_missing_peer_is_one_line_and_a_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = _harness(monkeypatch)
    bench = harness.Bench(1, True, tmp_path)
    row = next(r for r, _ in harness.rows(bench) if r.id == "initrd-zstd")
    monkeypatch.setattr(
        harness, "rows", lambda _: [(row, lambda r: harness.initrd_write(bench, r))]
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no cpio, no zstd
    (result,) = harness.measure(bench)
    assert result.skipped == "cpio not installed (apt-get install cpio)"
    assert not result.ours and not result.theirs and result.met is None
    assert capsys.readouterr().err == (
        "benchmark: skipping initrd-zstd: cpio not installed (apt-get install cpio)\n"
    )


def test_a_run_waits_out_the_mass_delete_of_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = _harness(monkeypatch)
    slept: list[float] = []
    monkeypatch.setattr(harness.time, "sleep", slept.append)
    monkeypatch.setattr(harness, "TEMP_DIR", tmp_path)
    few, many = tmp_path / "few" / "work", tmp_path / "many" / "work"
    for work, count in ((few, 10), (many, harness._MANY_FILES)):
        work.mkdir(parents=True)
        for n in range(count):
            (work / str(n)).touch()
    harness.remove_work(few)
    harness.wait_for_deleted(few.parent)
    assert not few.exists() and slept == [] and not (few.parent / ".work-deleted").exists()
    harness.remove_work(many)
    assert not many.exists()
    harness.wait_for_deleted(many.parent)
    assert len(slept) == 1 and 55 < slept[0] <= harness._RECENTLY_DELETED
    assert "deleted its work tree 0 s ago" in capsys.readouterr().err
    # A run into another results directory waits as long: the file system is the same.
    harness.wait_for_deleted(few.parent)
    assert len(slept) == 2 and 55 < slept[1] <= harness._RECENTLY_DELETED
    long_ago = time.time() - harness._RECENTLY_DELETED - 1
    for mark in (many.parent / ".work-deleted", *tmp_path.glob("supermin-benchmark-*")):
        os.utime(mark, (long_ago, long_ago))
    harness.wait_for_deleted(many.parent)
    harness.wait_for_deleted(few.parent)
    assert len(slept) == 2


def test_a_set_aside_tree_gives_back_its_pages_and_keeps_its_inodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = _harness(monkeypatch)
    monkeypatch.setattr(harness, "_SET_ASIDE", [])
    outside = tmp_path / "host-file"
    outside.write_bytes(b"h" * 100)
    tree = tmp_path / "work" / "out"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "own").write_bytes(b"o" * 5000)
    (tree / "empty").touch()
    (tree / "linked").hardlink_to(outside)
    (tree / "to-host").symlink_to(outside)
    os.mkfifo(tree / "fifo")
    assert harness.fresh(tree) == tree and not tree.exists()
    [aside] = harness._SET_ASIDE
    assert (aside / "d" / "own").stat().st_size == 0  # emptied, still there
    assert (aside / "empty").exists() and (aside / "fifo").exists()
    assert outside.read_bytes() == b"h" * 100  # neither the hardlink nor the symlink emptied it
    assert (aside / "linked").stat().st_size == 100
    assert harness.release_pages(aside) == 0  # nothing left to empty


def _floor_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _load(RUN.parent / "floor.py", "bench_floor", monkeypatch)


def test_the_cold_row_reports_its_floor(document: dict[str, Any]) -> None:
    (row,) = [r for r in document["comparisons"] if r["id"] == "pool-chroot-cold"]
    if row["skipped"]:
        assert "not installed" in row["skipped"]
        return
    context = row["context"]
    assert context["decode_cpu_s"] > 0 and context["tree_MB"] > 1 and context["cores"] >= 1
    rates = [context["page_cache_MB_per_s_before"], context["page_cache_MB_per_s_after"]]
    assert all(rate > 0 for rate in rates)
    # The bound: both copies' writing at the faster rate, added to the decoding, per core.
    seconds = context["tree_MB"] / max(rates)
    expected = (context["decode_cpu_s"] + 2 * seconds) / context["cores"]
    assert context["floor_two_copies_s"] == pytest.approx(expected)
    assert context["floor_one_copy_s"] < context["floor_two_copies_s"]
    slow = (context["decode_cpu_s"] + 2 * context["tree_MB"] / min(rates)) / context["cores"]
    assert context["floor_two_copies_at_slowest_rate_s"] == pytest.approx(slow)
    assert any(note.startswith("Floor: libarchive decompresses") for note in row["notes"])
    # Kernel time of every timed run on both sides (wait4), one figure per run.
    system = context["system_seconds"]
    assert len(system["ours"]) == len(system["peer"]) == document["meta"]["runs"]
    assert all(t > 0 for t in system["ours"] + system["peer"])
    assert any(note.startswith("System time per run, ours: ") for note in row["notes"])


def test_tree_bytes_counts_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    floor = _floor_module(monkeypatch)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 1000)
    (tmp_path / "b").write_bytes(b"y" * 24)
    (tmp_path / "d" / "a-again").hardlink_to(tmp_path / "d" / "a")
    (tmp_path / "link").symlink_to("d/a")
    assert floor.tree_bytes(tmp_path) == 1024


def test_the_page_cache_probe_writes_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    floor = _floor_module(monkeypatch)
    probe = tmp_path / "probe"
    assert floor.page_cache_rate(probe, 8 << 20) > 0
    assert probe.stat().st_size == 8 << 20  # left for the caller to remove after the runs
    with pytest.raises(FileExistsError):
        floor.page_cache_rate(probe, 1 << 20)


def test_data_members_are_what_ar_extracts(monkeypatch: pytest.MonkeyPatch) -> None:
    floor = _floor_module(monkeypatch)
    pool = real_pool(["zlib1g"])
    debs = sorted(pool.glob("*.deb"))
    members = floor.data_members(debs)
    for deb, member in zip(debs, members, strict=True):
        names = subprocess.run(["ar", "t", str(deb)], capture_output=True, text=True, check=True)
        (data,) = [name for name in names.stdout.split() if name.startswith("data.tar")]
        extracted = subprocess.run(["ar", "p", str(deb), data], capture_output=True, check=True)
        assert member == extracted.stdout
    assert floor.decode_cpu_seconds(members, 2) > 0
    bound = floor.Floor(decode_cpu=3.0, page_cache_rates=(1e9, 4e9), tree_bytes=int(2e9), cores=2)
    assert bound.seconds(2) == pytest.approx((3.0 + 2 * 0.5) / 2)
    assert bound.seconds(1) == pytest.approx((3.0 + 0.5) / 2)
    assert bound.seconds(2, bound.slowest_rate) == pytest.approx((3.0 + 2 * 2.0) / 2)
    assert "at the slower rate, 3.50 s, 0.35×" in floor.note(bound, 1, 10.0)
