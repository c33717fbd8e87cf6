"""OpenTelemetry for llama.cpp calls, following the GenAI semantic conventions."""

from typing import TYPE_CHECKING

from ._call_recorder import INFERENCE_EVENT, SCHEMA_URL, CallRecorder, RecordedCall, unmeasured
from ._capture import CAPTURE_CONTENT_ENV, EMIT_EVENT_ENV, ContentCapture
from ._core import Telemetry
from ._instrumented import InstrumentedAsyncLlamaCppClient, InstrumentedLlamaCppClient
from ._metrics import DURATION_BUCKETS, TOKEN_BUCKETS, TPOT_BUCKETS, TTFT_BUCKETS

if TYPE_CHECKING:  # loaded on use at run time (below); named here for type checkers
    from ._gpu_metrics import GpuMetrics
    from ._instrumentor import LlamaCppInstrumentor
    from ._process_metrics import ProcessMetrics
    from ._server_metrics import LlamaServerMetrics
    from ._setup import TelemetryHandle, setup_telemetry


def __getattr__(name: str) -> object:
    # The SDK-side pieces import optional packages (the ``otel`` extra): load them on use.
    if name == "LlamaCppInstrumentor":
        from ._instrumentor import LlamaCppInstrumentor

        return LlamaCppInstrumentor
    if name in ("setup_telemetry", "TelemetryHandle"):
        from . import _setup

        return getattr(_setup, name)
    if name == "GpuMetrics":
        from ._gpu_metrics import GpuMetrics

        return GpuMetrics
    if name == "ProcessMetrics":
        from ._process_metrics import ProcessMetrics

        return ProcessMetrics
    if name == "LlamaServerMetrics":
        from ._server_metrics import LlamaServerMetrics

        return LlamaServerMetrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CAPTURE_CONTENT_ENV",
    "CallRecorder",
    "ContentCapture",
    "DURATION_BUCKETS",
    "EMIT_EVENT_ENV",
    "GpuMetrics",
    "INFERENCE_EVENT",
    "InstrumentedAsyncLlamaCppClient",
    "InstrumentedLlamaCppClient",
    "LlamaCppInstrumentor",
    "LlamaServerMetrics",
    "ProcessMetrics",
    "RecordedCall",
    "SCHEMA_URL",
    "TOKEN_BUCKETS",
    "TPOT_BUCKETS",
    "TTFT_BUCKETS",
    "Telemetry",
    "TelemetryHandle",
    "setup_telemetry",
    "unmeasured",
]
