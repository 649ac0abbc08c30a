"""benchmarks/run.py --quick: every comparison runs and lands in all three outputs.

A smoke test of the harness, not of speed: no figure is compared with anything.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
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


def _harness(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_run", module)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


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
