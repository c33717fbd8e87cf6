"""The demo's telemetry: every call a span of `InstrumentedLlamaCppClient`, kept in memory.

A real OpenTelemetry SDK pipeline (``TracerProvider`` → ``SimpleSpanProcessor`` →
``InMemorySpanExporter``), private to the demo: the global tracer provider is left alone.
The SDK is an optional extra; without it the demo runs with plain clients and says so.

Also the pipeline of ``llamatelemetry bench --otlp-endpoint`` (set up only once a collector
answers at the endpoint) and ``--prometheus-port``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
from rich.text import Text

from ..api import LlamaCppClient
from ..api._internal import host_and_port
from ..server import ServerManager
from ._calls import CallRecord
from ._output import err_console
from ._user_errors import EXIT_INTERRUPTED, CliError, print_interrupted

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Span

__all__ = ["ROOT_SPAN", "DemoTelemetry", "SpanInfo"]

ROOT_SPAN = "llamatelemetry demo"
SDK_MISSING = (
    "Telemetry is off: the OpenTelemetry SDK is not installed "
    "(pip install 'llamatelemetry[otel]' to see every call's span)"
)
COLLECTOR_CHECK_TIMEOUT = 3.0  # seconds to connect to the OTLP endpoint before the run
EXPORT_TIMEOUT = 5.0  # seconds one OTLP export may take (bounds the wait at exit)


def _hex_id(span_id: int) -> str:
    return format(span_id, "016x")


def _plain(value: Any) -> Any:
    """Attribute values as JSON likes them (the SDK keeps sequences as tuples)."""
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class SpanInfo:
    """One finished span, as the tree and the JSON summary show it."""

    name: str
    span_id: str
    parent_id: str | None
    parent: str | None
    duration_ms: float
    status: str  # "unset", "ok" or "error"
    status_message: str | None
    attributes: dict[str, Any]
    operation: str | None  # the demo call that made it (None for the root)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parent": self.parent,
            "duration_ms": round(self.duration_ms, 3),
            "attributes": self.attributes,
            "status": self.status,
            "status_message": self.status_message,
            "operation": self.operation,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
        }


class DemoTelemetry:
    """The demo's tracer provider and in-memory exporter, or a note on why there are none.

    Also the demo's `SpanLog`: `measured_call` asks it which spans each call finished.
    """

    def __init__(
        self, provider: TracerProvider | None, exporter: InMemorySpanExporter | None, note: str
    ) -> None:
        self._provider = provider
        self._exporter = exporter
        self.note = note

    @classmethod
    def start(cls) -> DemoTelemetry:
        """An SDK pipeline when opentelemetry-sdk is installed, else telemetry off."""
        try:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )
        except ImportError:
            return cls(None, None, SDK_MISSING)
        exporter = InMemorySpanExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(provider, exporter, "OpenTelemetry SDK, spans kept in memory")

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    def close(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

    def client(self, manager: ServerManager) -> LlamaCppClient:
        """A client for ``manager``'s server: instrumented when telemetry is on."""
        if self._provider is None:
            return manager.client()
        from ..telemetry import InstrumentedLlamaCppClient

        api_key = manager.options.api_key if manager.options is not None else None
        return InstrumentedLlamaCppClient(manager.url, api_key, tracer_provider=self._provider)

    @contextmanager
    def openai_client(self, manager: ServerManager) -> Iterator[Any]:
        """An unchanged openai SDK client for ``manager``'s server, its calls observed by
        this package's instrumentation while the block runs (when telemetry is on and the
        instrumentation is not on already, by ``opentelemetry-instrument`` say). Raises
        ImportError without the SDK."""
        import openai

        api_key = manager.options.api_key if manager.options is not None else None
        client = openai.OpenAI(base_url=manager.url + "/v1", api_key=api_key or "none")
        instrumentor = None
        if self._provider is not None:
            from ..telemetry import LlamaCppInstrumentor

            instrumentor = LlamaCppInstrumentor()
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor = None  # someone else's to turn off
            else:
                instrumentor.instrument(tracer_provider=self._provider)
        try:
            with client:
                yield client
        finally:
            if instrumentor is not None:
                instrumentor.uninstrument()

    @contextmanager
    def root_span(self) -> Iterator[Span | None]:
        """The demo's root span, current while the block runs: every call span is its child."""
        if self._provider is None:
            yield None
            return
        tracer = self._provider.get_tracer("llamatelemetry.cli")
        with tracer.start_as_current_span(ROOT_SPAN) as span:
            yield span

    # -- SpanLog ---------------------------------------------------------------------

    def _finished(self) -> Sequence[ReadableSpan]:
        return self._exporter.get_finished_spans() if self._exporter is not None else ()

    def mark(self) -> int:
        return len(self._finished())

    def ids_since(self, mark: int) -> list[str]:
        return [_hex_id(span.context.span_id) for span in self._finished()[mark:]]

    # -- reading ---------------------------------------------------------------------

    def spans(self, calls: Sequence[CallRecord] = ()) -> list[SpanInfo]:
        """Every finished span, parents before children, siblings in start order; each call
        span names the demo call that made it."""
        finished = sorted(self._finished(), key=lambda s: s.start_time or 0)
        names = {_hex_id(s.context.span_id): s.name for s in finished}
        operations = {span_id: c.operation for c in calls for span_id in c.span_ids}
        infos = []
        for span in finished:
            span_id = _hex_id(span.context.span_id)
            parent_id = _hex_id(span.parent.span_id) if span.parent is not None else None
            status = span.status
            infos.append(SpanInfo(
                name=span.name,
                span_id=span_id,
                parent_id=parent_id,
                parent=names.get(parent_id) if parent_id else None,
                duration_ms=((span.end_time or 0) - (span.start_time or 0)) / 1e6,
                status=status.status_code.name.lower(),
                status_message=status.description,
                attributes={k: _plain(v) for k, v in (span.attributes or {}).items()},
                operation=operations.get(span_id),
            ))  # fmt: skip
        roots = [s for s in infos if s.parent_id not in names]
        return roots + [s for s in infos if s.parent_id in names]


# -- llamatelemetry bench ---------------------------------------------------------------


def _check_collector(endpoint: str) -> None:
    """Fail before measuring when nothing listens at the OTLP endpoint (the exporter would
    only retry in the background, and make the end of the run wait for it)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--otlp-endpoint must look like http://127.0.0.1:4318, got {endpoint!r}")
    try:
        with socket.create_connection(host_and_port(endpoint), timeout=COLLECTOR_CHECK_TIMEOUT):
            pass
    except (OSError, ValueError) as exc:
        raise CliError(f"--otlp-endpoint {endpoint}: no collector answers there ({exc})") from None


def _setup_telemetry(
    endpoint: str | None, prometheus_port: int | None, prometheus_host: str = "127.0.0.1"
) -> Any:
    """bench's own pipeline: spans and metrics over OTLP, metrics on a Prometheus endpoint,
    or both."""
    if endpoint is not None:
        _check_collector(endpoint)
    try:
        from ..telemetry import setup_telemetry

        telemetry = setup_telemetry(
            "llamatelemetry-bench",
            otlp_endpoint=endpoint,
            prometheus_port=prometheus_port,
            prometheus_host=prometheus_host,
            set_global=False,
            export_timeout_s=EXPORT_TIMEOUT,
        )
    except ImportError:
        option = "--otlp-endpoint" if endpoint is not None else "--prometheus-port"
        raise CliError(
            f"{option} needs the OpenTelemetry SDK: pip install 'llamatelemetry[otel]'"
        ) from None
    except RuntimeError as exc:  # the Prometheus exporter is not installed
        raise CliError(str(exc)) from None
    except OSError as exc:
        where = f"{prometheus_host}:{prometheus_port}"
        raise CliError(
            f"--prometheus-port: cannot listen on {where} ({exc.strerror or exc})"
        ) from None
    if prometheus_port is not None and telemetry.prometheus_url is None:
        telemetry.shutdown()
        raise CliError("--prometheus-port: OTEL_SDK_DISABLED=true switches telemetry off")
    return telemetry


def _last_scrape(telemetry: Any, seconds: float) -> Any:
    """An exit callback that gives Prometheus the run's last figures: it waits (at most
    ``seconds``) for a scrape begun after the run, unless the run ended in an error of
    its own (an interruption, a crash; a run whose every request failed still waits)."""

    def wait(exc_type: type[BaseException] | None, *_: object) -> None:
        if seconds == 0 or (exc_type is not None and not issubclass(exc_type, CliError)):
            return
        console = err_console()
        url = telemetry.prometheus_url
        try:  # a Ctrl-C as soon as the line is out is one while waiting
            console.print(Text(f"waiting up to {seconds:g} s for Prometheus to scrape the "
                               f"last figures at {url}", style="dim"), soft_wrap=True)  # fmt: skip
            scraped = telemetry.wait_for_scrape(seconds)
        except KeyboardInterrupt:
            print_interrupted(
                console, "stopped waiting: Prometheus may lack the run's last figures."
            )
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        if not scraped:
            console.print(Text(f"warning: no scrape of {url} in "
                               f"{seconds:g} s: Prometheus lacks the run's last figures",
                               style="yellow"), soft_wrap=True)  # fmt: skip

    return wait
