"""``InstrumentedLlamaCppClient`` and its async twin: clients whose every call is a span."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from opentelemetry._logs import LoggerProvider
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from typing_extensions import Unpack

from ..api import AsyncLlamaCppClient, ChatCompletion, LlamaCppClient
from ..api._internal import Call, ClientOptions, check_options
from ._attributes import PROVIDER
from ._call_recorder import CallRecorder
from ._core import Telemetry

__all__ = ["InstrumentedLlamaCppClient", "InstrumentedAsyncLlamaCppClient"]

T = TypeVar("T")


_TELEMETRY_OPTIONS = (
    "tracer_provider",
    "meter_provider",
    "logger_provider",
    "capture_content",
    "provider_name",
)


class _Instrumented:
    """The telemetry options and the spec's ``chat_completions``, for both transports."""

    _telemetry: Telemetry

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        capture_content: bool | str | None = None,
        provider_name: str = PROVIDER,
        http_client: Any = None,  # each transport's own type: see the classes below
        **options: Unpack[ClientOptions],
    ) -> None:
        check_options(type(self).__name__, options, _TELEMETRY_OPTIONS)
        super().__init__(base_url, api_key, http_client=http_client, **options)  # type: ignore[call-arg,misc]
        self._telemetry = Telemetry(
            CallRecorder(
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                logger_provider=logger_provider,
                capture_content=capture_content,
                provider_name=provider_name,
            )
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
    Message content is recorded only when asked for: ``capture_content`` (``True`` or
    ``"SPAN_ONLY"``, ``"EVENT_ONLY"``, ``"SPAN_AND_EVENT"``), else
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` with the same values. Inferences
    emit the ``gen_ai.client.inference.operation.details`` event through
    ``logger_provider`` (default: the global one) when events are asked for.
    """

    if TYPE_CHECKING:

        def __init__(
            self,
            base_url: str | None = None,
            api_key: str | None = None,
            *,
            tracer_provider: TracerProvider | None = None,
            meter_provider: MeterProvider | None = None,
            logger_provider: LoggerProvider | None = None,
            capture_content: bool | str | None = None,
            provider_name: str = PROVIDER,
            http_client: httpx.Client | None = None,
            **options: Unpack[ClientOptions],
        ) -> None: ...

    def execute_call(self, call: Call[T]) -> T:
        # The transport itself, not LlamaCppClient.execute_call: the instrumentor may have
        # wrapped that, and a call must be recorded once.
        return self._telemetry.execute(self, call, LlamaCppClient.send_call)


class InstrumentedAsyncLlamaCppClient(_Instrumented, AsyncLlamaCppClient):
    """The async twin of :class:`InstrumentedLlamaCppClient`
    (``await client.chat_completions(...)``)."""

    if TYPE_CHECKING:  # at run time, _Instrumented's returns this transport's coroutine

        def __init__(
            self,
            base_url: str | None = None,
            api_key: str | None = None,
            *,
            tracer_provider: TracerProvider | None = None,
            meter_provider: MeterProvider | None = None,
            logger_provider: LoggerProvider | None = None,
            capture_content: bool | str | None = None,
            provider_name: str = PROVIDER,
            http_client: httpx.AsyncClient | None = None,
            **options: Unpack[ClientOptions],
        ) -> None: ...

        async def chat_completions(  # type: ignore[override]
            self, payload: Mapping[str, Any]
        ) -> ChatCompletion: ...

    async def execute_call(self, call: Call[T]) -> T:  # type: ignore[override]
        return await self._telemetry.execute_async(self, call, AsyncLlamaCppClient.send_call)
