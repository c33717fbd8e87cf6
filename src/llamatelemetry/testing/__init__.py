"""Test support: tiny GGUF models and real llama.cpp servers, reusable in your own tests."""

from ._gguf import CHATML_TEMPLATE, TinyModel, build_tiny_lora, build_tiny_model

__all__ = ["CHATML_TEMPLATE", "TinyModel", "build_tiny_lora", "build_tiny_model"]
