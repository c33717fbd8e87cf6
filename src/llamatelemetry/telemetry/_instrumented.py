"""``InstrumentedLlamaCppClient`` and its async twin: clients whose every call is a span."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ..api._async_client import AsyncLlamaCppClient
from ..api._base import Call
from ..api._client import LlamaCppClient
from ..api._types import ChatCompletion
from ._attributes import PROVIDER
from ._core import Telemetry

__all__ = ["InstrumentedLlamaCppClient", "InstrumentedAsyncLlamaCppClient"]

T = TypeVar("T")

# The transports' own _execute, captured before any instrumentor could patch them, so an
# instrumented client never records a call twice.
_bare_execute = LlamaCppClient._execute
_bare_execute_async = AsyncLlamaCppClient._execute


class _Instrumented:
    """The telemetry options and the spec's ``chat_completions``, for both transports."""

    _telemetry: Telemetry
    _propagate = True

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        capture_content: bool | None = None,
        provider_name: str = PROVIDER,
        **options: Any,
    ) -> None:
        super().__init__(base_url, api_key, **options)  # type: ignore[call-arg]
        self._telemetry = Telemetry(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            capture_content=capture_content,
            provider_name=provider_name,
        )

    def chat_completions(self, payload: Mapping[str, Any]) -> ChatCompletion:
        """Chat from a raw request dict (the spec's plural form): ``{"messages": [...], ...}``."""
        if not isinstance(payload, Mapping):
            raise TypeError(
                f"payload must be a dict of request fields, not {type(payload).__name__}"
            )
        if "messages" not in payload:
            raise ValueError("payload needs 'messages': a list of {'role', 'content'} dicts")
        if payload.get("stream"):
            raise ValueError(
                "chat_completions returns a whole response; use "
                "chat.completions.create(..., stream=True) to stream"
            )
        return self.chat.completions.create(**payload)  # type: ignore[attr-defined,no-any-return]


class InstrumentedLlamaCppClient(_Instrumented, LlamaCppClient):
    """A :class:`LlamaCppClient` with OpenTelemetry built in.

    Every call is one CLIENT span named ``"{operation} {model}"`` with the GenAI request,
    response and usage attributes and llama.cpp's timings, plus the GenAI client and server
    histograms; requests carry W3C ``traceparent``. Providers default to the global ones.
    Message content is recorded only with ``capture_content=True`` or
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
    """

    def _execute(self, call: Call[T]) -> T:
        return self._telemetry.execute(self, call, _bare_execute)


class InstrumentedAsyncLlamaCppClient(_Instrumented, AsyncLlamaCppClient):
    """The async twin of :class:`InstrumentedLlamaCppClient`
    (``await client.chat_completions(...)``)."""

    if TYPE_CHECKING:  # at run time, _Instrumented's returns this transport's coroutine

        async def chat_completions(  # type: ignore[override]
            self, payload: Mapping[str, Any]
        ) -> ChatCompletion: ...

    async def _execute(self, call: Call[T]) -> T:  # type: ignore[override]
        return await self._telemetry.execute_async(self, call, _bare_execute_async)
