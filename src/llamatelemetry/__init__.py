"""llamatelemetry: a typed client, OpenTelemetry instrumentation and a server manager for llama.cpp."""

from ._version import __version__

__all__ = ["__version__"]
