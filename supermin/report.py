"""Progress and diagnostics: quiet by default, `-v` for steps and timings, `-vv` for detail."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Reporter:
    def __init__(self, verbosity: int = 0, stream: TextIO | None = None) -> None:
        self.verbosity = verbosity
        self.stream = stream or sys.stderr
        self._depth = 0
        self._warned: set[str] = set()

    def _emit(self, text: str) -> None:
        print(f"supermin: {'  ' * self._depth}{text}", file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            print(f"supermin: warning: {text}", file=self.stream, flush=True)

    def info(self, text: str) -> None:
        if self.verbosity >= 1:
            self._emit(text)

    def debug(self, text: str) -> None:
        if self.verbosity >= 2:
            self._emit(text)

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        start = time.monotonic()
        self.info(title)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            self.info(f"{title}: done in {time.monotonic() - start:.2f}s")


class Progress:
    """A one-line bar for long work: items and bytes done, redrawn at most 10 times a second.

    Drawn only on a terminal, and neither under CI (CI=…) nor with -v, where the
    step lines say more; otherwise every call is a no-op.
    """

    def __init__(self, report: Reporter, title: str, items: int, size: int) -> None:
        self.title = title
        self.items = items
        self.size = size
        self.done_items = 0
        self.done_bytes = 0
        self._stream = report.stream
        self.enabled = (
            report.verbosity == 0
            and not os.environ.get("CI")
            and hasattr(self._stream, "isatty")
            and self._stream.isatty()
        )
        self._lock = threading.Lock()  # advanced from worker threads
        self._drawn = 0.0

    def advance(self, size: int) -> None:
        with self._lock:
            self.done_items += 1
            self.done_bytes += size
            now = time.monotonic()
            if self.enabled and (now - self._drawn >= 0.1 or self.done_items == self.items):
                self._drawn = now
                self._stream.write("\r\x1b[K" + self.line())
                self._stream.flush()

    def line(self, width: int = 24) -> str:
        fraction = self.done_bytes / self.size if self.size else self.done_items / (self.items or 1)
        filled = int(width * min(fraction, 1.0))
        return (
            f"supermin: {self.title} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done_items}/{self.items} packages, "
            f"{self.done_bytes / 1e6:.1f}/{self.size / 1e6:.1f} MB"
        )

    def close(self) -> None:
        if self.enabled and self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
