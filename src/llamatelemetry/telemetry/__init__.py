"""OpenTelemetry for llama.cpp calls, following the GenAI semantic conventions."""

from ._instrumented import CAPTURE_CONTENT_ENV, InstrumentedLlamaCppClient

__all__ = ["CAPTURE_CONTENT_ENV", "InstrumentedLlamaCppClient"]
