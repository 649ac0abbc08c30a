"""Session-wide hooks: scratch appliances are removed once the run is over."""

from __future__ import annotations

import os

import pytest
from support.product import remove_scratch_dirs


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # SUPERMIN_KEEP_SCRATCH=1 keeps them, to look at a failing build afterwards.
    if not os.environ.get("SUPERMIN_KEEP_SCRATCH"):
        remove_scratch_dirs()
