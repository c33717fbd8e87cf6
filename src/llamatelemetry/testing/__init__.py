"""Test support: tiny GGUF models and real llama.cpp servers, reusable in your own tests."""

from ..server._internal import (
    CHATML_TEMPLATE,
    TinyModel,
    TinyModelFiles,
    build_tiny_files,
    build_tiny_lora,
    build_tiny_model,
    start_chat_server,
    start_rerank_server,
)
from ._servers import url_or_tiny_server

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
