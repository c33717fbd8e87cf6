"""The network backend the client wraps around httpcore's (``api._deadline_backend``: the
total_timeout in the middle of an answer's head, the free resend) is installed only where a
check has proven, on the installed httpx and httpcore, that the pool really uses it; where
it cannot be, the client still works and says once, as a warning, what is lost."""

from __future__ import annotations

import logging
from typing import Any

import httpcore
import pytest

from llamatelemetry.api import APITimeoutError

from ._hostile import Conn, Hostile, elapsed
from ._support import REPLY

pytestmark = pytest.mark.usefixtures("fresh_checks")


def answer_all(conn: Conn) -> None:
    while conn.read_request() is not None:
        conn.answer(200, REPLY)


def stalls(conn: Conn) -> None:
    if conn.read_request() is not None:
        conn.wait(30)  # ended by the server's close


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("llamatelemetry") and r.levelno == logging.WARNING
    ]


def pools_keep_their_first_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release of httpcore whose pool hands its connections the network backend it was
    built with: ``_network_backend`` is still there, but replacing it changes nothing."""
    for pool in (httpcore.ConnectionPool, httpcore.AsyncConnectionPool):
        real_init, real_create = pool.__init__, pool.create_connection

        def init(self: Any, *args: Any, real_init: Any = real_init, **kwargs: Any) -> None:
            real_init(self, *args, **kwargs)
            self.built_with = self._network_backend

        def create(self: Any, origin: Any, real_create: Any = real_create) -> Any:
            installed, self._network_backend = self._network_backend, self.built_with
            try:
                return real_create(self, origin)
            finally:
                self._network_backend = installed

        monkeypatch.setattr(pool, "__init__", init)
        monkeypatch.setattr(pool, "create_connection", create)


def test_a_pool_that_ignores_a_replaced_backend_warns_once_what_is_lost(
    drivers: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pools_keep_their_first_backend(monkeypatch)
    caplog.set_level(logging.DEBUG, logger="llamatelemetry")
    with Hostile(answer_all) as server:
        replies = [drivers(server.url, max_retries=0).chat() for _ in range(2)]
    assert [r.choices[0].message.content for r in replies] == ["ok", "ok"]  # still a client
    [warning] = warnings_of(caplog)  # once, for both clients
    assert "total_timeout" in warning and "resent" in warning
    with Hostile(stalls) as server:  # what the warning says is kept: a stall is still cut
        _, _, error = elapsed(drivers(server.url, max_retries=0, total_timeout=0.5).chat)
    assert isinstance(error, APITimeoutError) and "total_timeout" in str(error)


def test_the_installed_httpcore_passes_the_check_silently(
    drivers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="llamatelemetry")
    with Hostile(answer_all) as server:
        assert drivers(server.url).chat().choices[0].message.content == "ok"
    assert warnings_of(caplog) == []
    assert not [r for r in caplog.records if "not used" in r.getMessage()]
