from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..frameworks import forget_leftovers


@pytest.fixture(autouse=True)
def _frameworks_leftovers() -> Iterator[None]:
    """After each test, what the framework left open is collected (see forget_leftovers)."""
    yield
    forget_leftovers()
