"""The one timing helper every benchmark uses: medians, with per-run set-up left out."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def _nothing() -> None:
    return None


def timed(
    action: Callable[[], object], runs: int, before: Callable[[], object] = _nothing
) -> float:
    """Median wall-clock seconds of `action` over `runs`, calling `before` untimed each time."""
    samples = []
    for _ in range(runs):
        before()
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)
