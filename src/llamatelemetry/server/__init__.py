"""Run a real llama.cpp server: a ``llama-server`` binary or the one bundled in ``xllamacpp``."""

from ._engine import (
    BatchInferenceError,
    EngineStats,
    InferenceEngine,
    InferenceResult,
    StreamingInference,
)
from ._errors import ServerError, ServerStartError
from ._manager import ServerManager
from ._options import ServerOptions

__all__ = [
    "BatchInferenceError",
    "EngineStats",
    "InferenceEngine",
    "InferenceResult",
    "ServerError",
    "ServerManager",
    "ServerOptions",
    "ServerStartError",
    "StreamingInference",
]
