"""What the tests that run on both backends share: the backends, and a server for one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llamatelemetry.server import ServerManager

BACKENDS = ["embedded", "binary"]
MESSAGES = [{"role": "user", "content": "What is GGUF?"}]


def server_path(backend: str, request: pytest.FixtureRequest) -> Path | None:
    """The real llama-server binary for the binary backend (skipped when not built)."""
    return request.getfixturevalue("llama_server_binary") if backend == "binary" else None


def manager(
    backend: str, request: pytest.FixtureRequest, log_dir: Path, **kwargs: Any
) -> ServerManager:
    """A manager on a free port for ``backend``, logging to ``log_dir``."""
    return ServerManager(
        port=0,
        backend=backend,  # type: ignore[arg-type]
        server_path=server_path(backend, request),
        log_dir=log_dir,
        **kwargs,
    )
