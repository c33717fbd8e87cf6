"""Starting the demo's llama.cpp servers: the built-in tiny model, or the user's own model."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ..server import ServerManager

__all__ = ["DemoServer", "DemoServers", "start_builtin_servers", "start_model_server"]

#: Seconds a user's model may take to load (a large model on a slow disk needs a while).
MODEL_START_TIMEOUT = 300.0
#: One thread is plenty for the 4M-parameter tiny model, and it keeps the demo fast on a
#: busy machine: llama.cpp's threads spin at barriers, which collapses under CPU contention.
TINY_MODEL_THREADS = 1


@dataclass(frozen=True)
class DemoServer:
    """A started server, what it is for, and how long it took to become healthy."""

    role: str
    manager: ServerManager
    startup_ms: float
    features: str

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "url": self.manager.url,
            "backend": self.manager.backend,
            "startup_ms": round(self.startup_ms, 3),
            "features": self.features,
            "log": str(self.manager.log_path),
        }


@dataclass(frozen=True)
class DemoServers:
    """The servers of one demo run; ``rerank`` is None when the chat server must do it all."""

    chat: DemoServer
    rerank: DemoServer | None
    model_path: Path
    builtin: bool

    @property
    def all(self) -> list[DemoServer]:
        return [s for s in (self.chat, self.rerank) if s is not None]


def _timed(
    stack: ExitStack, role: str, features: str, start: Callable[[], ServerManager]
) -> DemoServer:
    """Run ``start``, register the server with ``stack`` (so it is always stopped), time it.

    A start that fails or is interrupted stops its own half-started server.
    """
    started = time.perf_counter()
    manager = stack.enter_context(start())
    return DemoServer(role, manager, (time.perf_counter() - started) * 1000.0, features)


def start_builtin_servers(
    stack: ExitStack, work_dir: Path, threads: int | None = None
) -> DemoServers:
    """Build the tiny random-weight model and LoRA adapter in ``work_dir``; start two servers."""
    from ..server._internal import start_chat_server, start_rerank_server

    threads = threads or TINY_MODEL_THREADS

    chat = _timed(
        stack,
        "chat",
        "chat, embeddings, metrics, slots, LoRA",
        lambda: start_chat_server(work_dir, n_parallel=2, n_threads=threads),
    )
    rerank = _timed(
        stack,
        "rerank",
        "reranking",
        lambda: start_rerank_server(work_dir, n_threads=threads),
    )
    options = chat.manager.options
    model_path = options and options.model_path or work_dir / "tiny-model.gguf"
    return DemoServers(chat, rerank, model_path, builtin=True)


def start_model_server(
    stack: ExitStack, work_dir: Path, model: Path, threads: int | None = None
) -> DemoServers:
    """Start one server for the user's ``model`` with embeddings, metrics and slots.

    ``threads`` None lets llama.cpp pick (as many as there are cores).
    """

    def start() -> ServerManager:
        manager = ServerManager(port=0, log_dir=work_dir / "logs")
        manager.start(
            model,
            embedding=True,
            pooling="mean",
            metrics=True,
            slots=True,
            n_threads=threads,
            timeout=MODEL_START_TIMEOUT,
        )
        return manager

    chat = _timed(stack, "chat", "chat, embeddings, metrics, slots", start)
    return DemoServers(chat, None, model, builtin=False)
