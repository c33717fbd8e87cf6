"""Real llama.cpp servers for the whole session: a tiny GGUF model served by the embedded
llama.cpp server (or a ``llama-server`` binary from ``LLAMA_SERVER_PATH``/PATH)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.server import ServerManager
from llamatelemetry.testing import (
    TinyModelFiles,
    build_tiny_files,
    start_chat_server,
    start_rerank_server,
)

API_KEY = "test-key-5f1c"


@pytest.fixture(scope="session")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def tiny_files(server_dir: Path) -> TinyModelFiles:
    return build_tiny_files(server_dir / "model")


@pytest.fixture(scope="session")
def chat_server(server_dir: Path, tiny_files: TinyModelFiles) -> Iterator[ServerManager]:
    """Chat, completions, embeddings (mean pooling), metrics, slots, a LoRA adapter; 4 slots."""
    with start_chat_server(server_dir / "chat") as server:
        yield server


@pytest.fixture(scope="session")
def rerank_server(server_dir: Path, tiny_files: TinyModelFiles) -> Iterator[ServerManager]:
    with start_rerank_server(server_dir / "rerank") as server:
        yield server


@pytest.fixture(scope="session")
def key_server(server_dir: Path, tiny_files: TinyModelFiles) -> Iterator[ServerManager]:
    with start_chat_server(server_dir / "key", api_key=API_KEY, n_parallel=1) as server:
        yield server


@pytest.fixture
def client(chat_server: ServerManager) -> Iterator[LlamaCppClient]:
    with LlamaCppClient(base_url=chat_server.url) as client:
        yield client


@pytest.fixture
def rerank_client(rerank_server: ServerManager) -> Iterator[LlamaCppClient]:
    with LlamaCppClient(base_url=rerank_server.url) as client:
        yield client
