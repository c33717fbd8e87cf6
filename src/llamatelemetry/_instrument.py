"""``llamatelemetry.instrument()``: telemetry for every client in the process, in one call.

The same as ``opentelemetry-instrument python app.py`` does through the
``opentelemetry_instrumentor`` entry point, for code that sets itself up. It needs the
``otel`` extra; it is loaded on first use, so ``import llamatelemetry`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["instrument", "uninstrument"]


def instrument(**options: Any) -> None:
    """Instrument every ``LlamaCppClient`` and ``AsyncLlamaCppClient`` in the process,
    the ones libraries create included: each call a span with the GenAI metrics. Keyword
    arguments: ``tracer_provider``, ``meter_provider``, ``logger_provider`` (each the
    global one by default), ``capture_content``. Instrumenting twice changes nothing."""
    from .telemetry import LlamaCppInstrumentor

    LlamaCppInstrumentor().instrument(**options)


def uninstrument() -> None:
    """Undo ``instrument()``: the clients' methods are as they were (another library's
    wrapper put on them since stays in place)."""
    from .telemetry import LlamaCppInstrumentor

    LlamaCppInstrumentor().uninstrument()
