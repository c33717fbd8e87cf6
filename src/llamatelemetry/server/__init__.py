"""Run a real llama.cpp server: a ``llama-server`` binary or the one bundled in ``xllamacpp``."""

from ._engine import InferenceEngine
from ._errors import BatchInferenceError, ServerError, ServerStartError
from ._manager import ServerManager
from ._options import ServerOptions
from ._results import InferenceResult
from ._stats import EngineStats
from ._streaming import StreamingInference

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
