"""``LlamaCppInstrumentor``: telemetry for every plain ``LlamaCppClient`` and
``AsyncLlamaCppClient`` in the process.

```python
from llamatelemetry.telemetry import LlamaCppInstrumentor

LlamaCppInstrumentor().instrument(tracer_provider=..., meter_provider=...)
...
LlamaCppInstrumentor().uninstrument()
```

It follows opentelemetry-instrumentation's ``BaseInstrumentor`` (a singleton, idempotent
``instrument``/``uninstrument``, providers as keyword arguments) and needs the
``opentelemetry-instrumentation`` package (in the ``otel`` extra).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from ..api._async_client import AsyncLlamaCppClient
from ..api._base import Call
from ..api._client import LlamaCppClient
from ._core import Telemetry
from ._instrumented import _bare_execute, _bare_execute_async

__all__ = ["LlamaCppInstrumentor"]

_instruments = ("llamatelemetry >= 0.1",)


class LlamaCppInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Patch ``LlamaCppClient`` so each call is a span with GenAI metrics; results are
    unchanged. Keyword arguments: ``tracer_provider``, ``meter_provider``,
    ``capture_content`` (default: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        telemetry = Telemetry(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            capture_content=kwargs.get("capture_content"),
        )

        def _execute(client: LlamaCppClient, call: Call[Any]) -> Any:
            return telemetry.execute(client, call, _bare_execute)

        async def _execute_async(client: AsyncLlamaCppClient, call: Call[Any]) -> Any:
            return await telemetry.execute_async(client, call, _bare_execute_async)

        _execute.__wrapped__ = _bare_execute  # type: ignore[attr-defined]
        _execute_async.__wrapped__ = _bare_execute_async  # type: ignore[attr-defined]
        LlamaCppClient._execute = _execute  # type: ignore[method-assign,assignment]
        AsyncLlamaCppClient._execute = _execute_async  # type: ignore[method-assign,assignment]
        LlamaCppClient._propagate = AsyncLlamaCppClient._propagate = True

    def _uninstrument(self, **kwargs: Any) -> None:
        LlamaCppClient._execute = _bare_execute  # type: ignore[method-assign]
        AsyncLlamaCppClient._execute = _bare_execute_async  # type: ignore[method-assign]
        LlamaCppClient._propagate = AsyncLlamaCppClient._propagate = False
