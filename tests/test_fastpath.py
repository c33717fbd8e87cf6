"""Fast paths through other libraries' private objects are taken only once a check has
proven them equal to the public path on the installed versions (``_fastpath``): the check
runs once, a failing or differing one leaves the public path with one log line, and the
checks touch no network."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import pytest

from llamatelemetry._fastpath import FastPath
from llamatelemetry.api import _deadline_backend, _stream_body
from llamatelemetry.telemetry import _bulk

log = logging.getLogger("llamatelemetry.test")


def test_a_check_runs_once_whichever_thread_asks_first() -> None:
    runs: list[int] = []
    start = threading.Barrier(8)

    def check() -> None:
        runs.append(1)

    path = FastPath("probe", check, log)
    verdicts: list[bool] = []

    def ask() -> None:
        start.wait()
        verdicts.append(path.trusted)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert verdicts == [True] * 8 and runs == [1]


@pytest.mark.parametrize("outcome", ["differs", "raises"])
def test_a_differing_or_failing_check_leaves_the_public_path_with_one_debug_line(
    outcome: str, caplog: pytest.LogCaptureFixture
) -> None:
    def check() -> str | None:
        if outcome == "raises":
            raise AttributeError("'Pool' object has no attribute '_network_backend'")
        return "3 buckets where record makes 4"

    caplog.set_level(logging.DEBUG, logger="llamatelemetry")
    path = FastPath("the probe's path", check, log)
    assert [path.trusted for _ in range(3)] == [False] * 3
    [record] = caplog.records
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith("the probe's path: not used on these versions (")
    assert ("_network_backend" if outcome == "raises" else "record makes 4") in record.getMessage()


def test_a_fallback_that_loses_a_behaviour_says_so_once_as_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = FastPath("the probe's path", lambda: "differs", log, lost="the deadline is gone")
    assert not path.trusted and not path.trusted
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith(": the deadline is gone")


@pytest.mark.usefixtures("fresh_checks")
def test_the_checks_pass_on_the_installed_versions_without_the_network(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a check used the network")

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, refused)
    monkeypatch.setattr(socket, "getaddrinfo", refused)
    caplog.set_level(logging.DEBUG, logger="llamatelemetry")
    paths = [
        _stream_body.SYNC_PATH,
        _stream_body.ASYNC_PATH,
        _deadline_backend.SYNC_BACKEND,
        _deadline_backend.ASYNC_BACKEND,
    ]
    assert [path.trusted for path in [*paths, _bulk.FAST_PATH]] == [True] * 5
    assert [r.getMessage() for r in caplog.records if r.name.startswith("llamatelemetry")] == []
