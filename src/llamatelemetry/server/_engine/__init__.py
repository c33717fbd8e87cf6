"""The inference engine and its measurements: `InferenceEngine` runs generations on a
server it manages and measures each of them.

- ``_inference_engine``: `InferenceEngine`, the model, its server and a client together
- ``_inference_result``: `InferenceResult`, one measured generation (the figures' definitions)
- ``_streaming_inference``: `StreamingInference`, one generation token by token, measured
- ``_engine_stats``: `EngineStats`, what the engine has done, added up
- ``_batch_inference_error``: `BatchInferenceError`, some prompts of a batch failed

It lives in the server layer, one floor above process management: the engine owns a
`ServerManager`, and ``llamatelemetry.server`` is where users import it from, so a layer
of its own above ``server`` would make that re-export an upward import. Its measuring is
neither telemetry's (OpenTelemetry signals of any client's calls) nor bench's (a load
generator's distributions): it is the clock and llama.cpp's ``timings`` of the engine's
own calls, kept in plain dataclasses. The rest of ``server`` never imports it (the layer
test checks); users import these names from ``llamatelemetry.server``.
"""

from ._batch_inference_error import BatchInferenceError
from ._engine_stats import EngineStats
from ._inference_engine import InferenceEngine
from ._inference_result import InferenceResult
from ._streaming_inference import StreamingInference

__all__ = [
    "BatchInferenceError",
    "EngineStats",
    "InferenceEngine",
    "InferenceResult",
    "StreamingInference",
]
