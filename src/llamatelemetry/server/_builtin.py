"""The built-in tiny model's servers: what ``llamatelemetry demo`` runs with no model of
the user's, and what the test helpers in ``llamatelemetry.testing`` start.

Each returns a started `ServerManager` on a free port; stop it (or use it as a context
manager). A server starts in about 0.2 s on a CPU.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ._manager import Backend, ServerManager
from ._tiny_model import TinyModel, build_tiny_lora, build_tiny_model

__all__ = [
    "TinyModelFiles",
    "build_tiny_files",
    "start_chat_server",
    "start_rerank_server",
]

T = TypeVar("T")
MODEL_FILE = "tiny-model.gguf"
LORA_FILE = "tiny-lora.gguf"


class TinyModelFiles(NamedTuple):
    """The tiny model and its LoRA adapter, as written by `build_tiny_files`."""

    model: TinyModel
    lora_path: Path


def _write_atomically(target: Path, build: Callable[[Path], T]) -> T:
    # A running server mmaps its model: rewriting the file in place would pull the pages
    # out from under it. Write a sibling file and rename it over the target instead.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        result = build(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return result


def build_tiny_files(directory: str | os.PathLike[str]) -> TinyModelFiles:
    """Write the tiny model and a matching LoRA adapter into ``directory``.

    Safe to call again, also while servers use earlier copies (files are replaced
    atomically, and the content is deterministic).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / MODEL_FILE
    lora_path = directory / LORA_FILE
    model = _write_atomically(model_path, build_tiny_model)
    _write_atomically(lora_path, build_tiny_lora)
    # The builder recorded the temporary name; report the final one.
    return TinyModelFiles(model=dataclasses.replace(model, path=model_path), lora_path=lora_path)


def start_chat_server(
    directory: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    n_parallel: int = 4,
    backend: Backend = "auto",
    server_path: str | os.PathLike[str] | None = None,
    **start_options: Any,
) -> ServerManager:
    """Start a server for chat, completion, embeddings (pooling mean), metrics and slots.

    The tiny LoRA adapter is loaded at scale 1.0, slots can be saved to
    ``directory/"slots"``, logs go to ``directory/"logs"``, the port is a free one.
    ``start_options`` override or extend the `ServerManager.start` arguments.
    """
    directory = Path(directory)
    files = build_tiny_files(directory)
    options: dict[str, Any] = {
        "n_parallel": n_parallel,
        "n_threads": 1,  # a tiny model gains nothing from threads, and they spin on busy CPUs
        "embedding": True,
        "pooling": "mean",
        "lora": [files.lora_path],
        "api_key": api_key,
        "metrics": True,
        "slots": True,
        "slot_save_path": directory / "slots",
        **start_options,
    }
    return _started(directory, backend, server_path, files.model.path, options)


def start_rerank_server(
    directory: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    n_parallel: int = 1,
    backend: Backend = "auto",
    server_path: str | os.PathLike[str] | None = None,
    **start_options: Any,
) -> ServerManager:
    """Start a server for ``/v1/rerank`` (embedding with pooling rank) on a free port."""
    directory = Path(directory)
    files = build_tiny_files(directory)
    options: dict[str, Any] = {
        "n_parallel": n_parallel,
        "n_threads": 1,
        "reranking": True,
        "api_key": api_key,
        **start_options,
    }
    return _started(directory, backend, server_path, files.model.path, options)


def _started(
    directory: Path,
    backend: Backend,
    server_path: str | os.PathLike[str] | None,
    model_path: Path,
    options: dict[str, Any],
) -> ServerManager:
    manager = ServerManager(
        port=0, backend=backend, server_path=server_path, log_dir=directory / "logs"
    )
    manager.start(model_path, **options)
    return manager
