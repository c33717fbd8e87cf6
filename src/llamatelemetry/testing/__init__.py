"""Test support: tiny GGUF models and real llama.cpp servers, reusable in your own tests."""

from ._gguf import CHATML_TEMPLATE, TinyModel, build_tiny_lora, build_tiny_model
from ._servers import (
    TinyModelFiles,
    build_tiny_files,
    start_chat_server,
    start_rerank_server,
    url_or_tiny_server,
)

__all__ = [
    "CHATML_TEMPLATE",
    "TinyModel",
    "TinyModelFiles",
    "build_tiny_files",
    "build_tiny_lora",
    "build_tiny_model",
    "start_chat_server",
    "start_rerank_server",
    "url_or_tiny_server",
]
