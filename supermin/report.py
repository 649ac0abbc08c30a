"""Progress and diagnostics: quiet by default, `-v` for steps and timings, `-vv` for detail."""

from __future__ import annotations

import sys
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
