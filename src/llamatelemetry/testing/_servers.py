"""Real llama.cpp servers for tests: tiny model, every endpoint switched on, a free port.

Each helper returns a started `ServerManager`; stop it (or use it as a context manager)::

    with start_chat_server(tmp_path) as server:
        httpx.get(f"{server.url}/health")

A server starts in about 0.2 s on a CPU, so a test suite can afford one per test module,
or even per test when it needs a pristine server.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator

from ..server._internal import start_chat_server

__all__ = ["url_or_tiny_server"]


@contextlib.contextmanager
def url_or_tiny_server(
    env: str = "LLAMA_BASE_URL", *, announce: Callable[[str], None] | None = None
) -> Iterator[str]:
    """The server URL in ``$env`` or, when it is unset, the URL of a tiny-model chat server
    started for the ``with`` block (and stopped after it): scripts then run anywhere.
    ``announce`` is told the URL of a server started this way."""
    url = os.environ.get(env)
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory() as tmp, start_chat_server(tmp) as server:
        if announce is not None:
            announce(server.url)
        yield server.url
