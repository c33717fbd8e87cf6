"""Run a real llama.cpp server: a ``llama-server`` binary or the one bundled in ``xllamacpp``.

Process management (`ServerManager`, `ServerOptions`) is this package's own modules; the
inference engine and its measurements (`InferenceEngine`, `InferenceResult`, ...) are in
``_engine``, on top of it.
"""

from ._engine import (
    BatchInferenceError,
    EngineStats,
    InferenceEngine,
    InferenceResult,
    StreamingInference,
)
from ._manager import ServerManager
from ._options import ServerOptions
from ._server_errors import ServerError, ServerStartError

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
