"""Fixtures of the reliability suite (the session servers come from tests/conftest.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._support import Driver, make_driver


@pytest.fixture
def no_debug_logs() -> Iterator[None]:
    """Drop DEBUG records for the test: pytest keeps every captured record in memory, which
    a memory bound must not count (when the run has --log-level=DEBUG, say). Records from
    INFO up still flow, so log spam would still show as growth."""
    logging.disable(logging.DEBUG)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which client a scenario runs with: ``LlamaCppClient`` or ``AsyncLlamaCppClient``."""
    return str(request.param)


@pytest.fixture
def drivers(kind: str) -> Iterator[Callable[..., Driver]]:
    """``drivers(url, **client_options)``: a driver of this test's client kind, closed after."""
    made: list[Driver] = []

    def make(url: str, types: tuple[type, type] | None = None, **options: Any) -> Driver:
        driver = make_driver(kind, url, types, **options)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from ._support import FIGURES, TALLY

    if not TALLY and not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, value in sorted(TALLY.items()):
        terminalreporter.write_line(f"{name}: {value}")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")
