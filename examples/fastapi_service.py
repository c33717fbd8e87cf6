"""A FastAPI service on the async client, traced end to end.

    pip install 'llamatelemetry[otel,examples]'
    LLAMA_BASE_URL=http://127.0.0.1:8080 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
        python examples/fastapi_service.py            # serves on http://127.0.0.1:8000

    curl -s localhost:8000/chat -H 'content-type: application/json' -d '{"message": "Hi"}'
    curl -sN localhost:8000/chat/stream -H 'content-type: application/json' -d '{"message": "Hi"}'

Every HTTP request is a SERVER span (continuing the caller's trace when it sends
``traceparent``), and the llama.cpp calls made while handling it are CLIENT spans beneath
it; their requests carry ``traceparent`` on to llama-server. Recent FastAPI releases trace
requests themselves (``FastAPI(telemetry=...)``: server spans, HTTP metrics); with an
older FastAPI, the small ASGI middleware below does the server side.

Telemetry goes wherever the standard OTEL_* variables say (OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set). Without LLAMA_BASE_URL the built-in tiny model is
served for the run (the ``server`` extra). PORT sets the port (default 8000).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from opentelemetry import propagate, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, StatusCode, TracerProvider
from pydantic import BaseModel, Field

from llamatelemetry.telemetry import InstrumentedAsyncLlamaCppClient, setup_telemetry
from llamatelemetry.testing import url_or_tiny_server

#: Whether this FastAPI traces requests natively (``FastAPI(telemetry={...})``).
FASTAPI_TRACES = "telemetry" in inspect.signature(FastAPI).parameters


class TracingMiddleware:
    """One SERVER span per HTTP request, the current span while the app handles it (for a
    FastAPI without native telemetry)."""

    def __init__(self, app: Any, tracer_provider: TracerProvider | None = None) -> None:
        self.app = app
        self.tracer = trace.get_tracer("fastapi-example", tracer_provider=tracer_provider)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(headers)  # the caller's trace, if it sent traceparent
        with self.tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
        ) as span:

            async def send_and_record(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        span.set_status(StatusCode.ERROR)
                await send(message)

            await self.app(scope, receive, send_and_record)


class ChatRequest(BaseModel):
    message: str = Field(min_length=1)
    max_tokens: int = Field(default=64, ge=1, le=4096)


class ChatReply(BaseModel):
    reply: str
    prompt_tokens: int
    completion_tokens: int
    trace_id: str


def create_app(
    base_url: str,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    native_telemetry: bool = FASTAPI_TRACES,
) -> FastAPI:
    """The service, talking to the llama-server at ``base_url``; providers default to the
    global ones. ``native_telemetry=False`` uses `TracingMiddleware` instead of FastAPI's
    own request tracing."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client for the whole service: one connection pool, shared by all requests.
        async with InstrumentedAsyncLlamaCppClient(
            base_url=base_url, tracer_provider=tracer_provider, meter_provider=meter_provider
        ) as client:
            app.state.llama = client
            yield

    title = "llamatelemetry FastAPI example"
    if native_telemetry:
        app = FastAPI(
            title=title,
            lifespan=lifespan,
            telemetry={"tracer_provider": tracer_provider, "meter_provider": meter_provider},
        )
    else:
        off: dict[str, Any] = {"telemetry": {"tracing": False}} if FASTAPI_TRACES else {}
        app = FastAPI(title=title, lifespan=lifespan, **off)
        app.add_middleware(TracingMiddleware, tracer_provider=tracer_provider)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"llama_server": await app.state.llama.health.check()}

    @app.post("/chat")
    async def chat(request: ChatRequest) -> ChatReply:
        reply = await app.state.llama.chat.completions.create(
            messages=[{"role": "user", "content": request.message}],
            max_tokens=request.max_tokens,
        )
        trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
        return ChatReply(
            reply=reply.choices[0].message.content or "",
            prompt_tokens=reply.usage.prompt_tokens,
            completion_tokens=reply.usage.completion_tokens,
            trace_id=trace_id,
        )

    @app.post("/chat/stream")
    async def chat_stream(request: ChatRequest) -> StreamingResponse:
        stream = await app.state.llama.chat.completions.create(
            messages=[{"role": "user", "content": request.message}],
            max_tokens=request.max_tokens,
            stream=True,
        )

        async def pieces() -> AsyncIterator[str]:
            async with stream:  # the client span ends when the stream does, even on disconnect
                async for chunk in stream:
                    if chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content

        return StreamingResponse(pieces(), media_type="text/plain; charset=utf-8")

    return app


def announce(url: str) -> None:
    print(f"(no LLAMA_BASE_URL: serving the built-in tiny model at {url})", flush=True)


def main() -> None:
    import uvicorn

    telemetry = setup_telemetry(service_name=os.environ.get("OTEL_SERVICE_NAME", "fastapi-example"))
    try:
        with url_or_tiny_server(announce=announce) as url:
            port = int(os.environ.get("PORT", "8000"))
            uvicorn.run(create_app(url), host="127.0.0.1", port=port, log_level="info")
    finally:
        telemetry.shutdown()  # flush the last spans and metrics


if __name__ == "__main__":
    main()
