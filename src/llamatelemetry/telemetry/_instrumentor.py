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

from ..api import AsyncLlamaCppClient, LlamaCppClient
from ..api._internal import Call
from ._call_recorder import CallRecorder
from ._core import Telemetry

__all__ = ["LlamaCppInstrumentor"]

_instruments = ("llamatelemetry >= 0.1",)


# The method every call of a client goes through (the api layer's ``Caller`` seam).
_WRAPPED = "execute_call"


class _Patch:
    """One wrapper this instrumentor put on a class's ``execute_call``, and what was there
    before it (the transport's own, or another library's wrapper)."""

    __slots__ = ("cls", "previous", "wrapper", "telemetry")

    def __init__(self, cls: type, telemetry: Telemetry, asynchronous: bool) -> None:
        self.cls = cls
        self.previous: Any = cls.__dict__[_WRAPPED]
        self.telemetry: Telemetry | None = telemetry
        previous, patch = self.previous, self

        if asynchronous:

            async def wrapper(client: Any, call: Call[Any]) -> Any:
                telemetry = patch.telemetry
                if telemetry is None:  # uninstrumented under someone else's wrapper
                    return await previous(client, call)
                return await telemetry.execute_async(client, call, previous)

        else:

            def wrapper(client: Any, call: Call[Any]) -> Any:  # type: ignore[misc]
                telemetry = patch.telemetry
                if telemetry is None:
                    return previous(client, call)
                return telemetry.execute(client, call, previous)

        wrapper.__wrapped__ = previous  # type: ignore[attr-defined]
        self.wrapper = wrapper
        setattr(cls, _WRAPPED, wrapper)

    def remove(self) -> None:
        """Take this wrapper out: restore what it wrapped when it is still the outermost;
        when another library wrapped it since, leave their wrapper in place and make ours a
        plain pass-through (removing it would remove theirs too)."""
        self.telemetry = None
        if self.cls.__dict__.get(_WRAPPED) is self.wrapper:
            setattr(self.cls, _WRAPPED, self.previous)


class LlamaCppInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Patch ``LlamaCppClient`` so each call is a span with GenAI metrics; results are
    unchanged. Keyword arguments: ``tracer_provider``, ``meter_provider``,
    ``logger_provider`` (for the operation-details event), ``capture_content`` (default:
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).

    ``uninstrument()`` removes only this instrumentor's own wrapper: a wrapper another
    library put on the same method, before or after, stays where it is.
    """

    _patches: list[_Patch] = []

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        telemetry = Telemetry(
            CallRecorder(
                tracer_provider=kwargs.get("tracer_provider"),
                meter_provider=kwargs.get("meter_provider"),
                logger_provider=kwargs.get("logger_provider"),
                capture_content=kwargs.get("capture_content"),
            )
        )
        self._patches = [
            _Patch(LlamaCppClient, telemetry, asynchronous=False),
            _Patch(AsyncLlamaCppClient, telemetry, asynchronous=True),
        ]

    def _uninstrument(self, **kwargs: Any) -> None:
        for patch in self._patches:
            patch.remove()
        self._patches = []
