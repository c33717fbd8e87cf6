"""``setup_telemetry``: SDK tracer and meter providers with working exporters, in one call.

```python
from llamatelemetry.telemetry import setup_telemetry

telemetry = setup_telemetry(service_name="my-app", otlp_endpoint="http://127.0.0.1:4318")
...
telemetry.shutdown()  # flushes what is still buffered
```

The standard environment variables apply: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_ENDPOINT`` (and the per-signal ``..._TRACES_``/``..._METRICS_``/
``..._LOGS_`` ones), ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_TRACES_SAMPLER`` (and ``OTEL_TRACES_SAMPLER_ARG``), ``OTEL_BSP_*``, ``OTEL_BLRP_*``,
``OTEL_METRIC_EXPORT_INTERVAL`` and ``OTEL_SDK_DISABLED``. Needs the ``otel`` extra.

Logs are the third signal: the GenAI operation-details event (opt-in, with message
content when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for events) goes
through the logger provider built here, to the same collector as the spans.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    ConsoleLogRecordExporter,
    LogRecordExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from .._closing import Closing
from ._prometheus import PrometheusEndpoint

__all__ = ["setup_telemetry", "TelemetryHandle"]

log = logging.getLogger("llamatelemetry.telemetry")

Protocol = Literal["http/protobuf", "grpc"]
DEFAULT_SERVICE_NAME = "llamatelemetry"


@dataclass
class TelemetryHandle(Closing):
    """What ``setup_telemetry`` built; ``shutdown()`` flushes and stops it all."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    prometheus_url: str | None = None
    logger_provider: LoggerProvider | None = None
    _closers: list[Any] = field(default_factory=list, repr=False)
    _prometheus: PrometheusEndpoint | None = field(default=None, repr=False)

    def wait_for_scrape(self, timeout: float) -> bool:
        """Wait until Prometheus has scraped the endpoint once more (at most ``timeout``
        seconds), so that it holds every figure recorded so far: call it before a
        short-lived process exits. False when no scrape came in time."""
        if self._prometheus is None:
            raise RuntimeError("no Prometheus endpoint to wait on: pass prometheus_port")
        return self._prometheus.wait_for_scrape(timeout)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        spans = self.tracer_provider.force_flush(timeout_millis)
        points = self.meter_provider.force_flush(timeout_millis)
        records = (
            self.logger_provider.force_flush(timeout_millis)
            if self.logger_provider is not None
            else True
        )
        return bool(spans and points and records)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        if self.logger_provider is not None:
            self.logger_provider.shutdown()
        for close in self._closers:
            close()
        self._closers.clear()

    def close(self) -> None:
        self.shutdown()


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _otlp_exporters(
    endpoint: str | None, protocol: str, headers: Mapping[str, str] | None, timeout: float | None
) -> tuple[SpanExporter | None, Any, LogRecordExporter | None]:
    """OTLP span, metric and log exporters, each None unless an endpoint is configured
    for it (the argument, ``OTEL_EXPORTER_OTLP_ENDPOINT``, or the signal's own variable)."""
    common = endpoint or _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    traces = bool(common or _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    metrics_on = bool(common or _env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
    logs_on = bool(common or _env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"))
    if not traces and not metrics_on and not logs_on:
        return None, None, None
    kwargs: dict[str, Any] = {"headers": dict(headers)} if headers else {}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (  # type: ignore[import-not-found]
                OTLPLogExporter as GrpcLogExporter,
            )
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # type: ignore[import-not-found]
                OTLPMetricExporter as GrpcMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError as exc:
            raise RuntimeError(
                "protocol='grpc' needs the gRPC exporter: "
                "pip install opentelemetry-exporter-otlp-proto-grpc"
            ) from exc
        if endpoint:
            kwargs["endpoint"] = endpoint
        return (
            GrpcSpanExporter(**kwargs) if traces else None,
            GrpcMetricExporter(**kwargs) if metrics_on else None,
            GrpcLogExporter(**kwargs) if logs_on else None,
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if endpoint:  # a base URL, as in OTEL_EXPORTER_OTLP_ENDPOINT: add the signal paths
        base = endpoint.rstrip("/")
        return (
            OTLPSpanExporter(endpoint=f"{base}/v1/traces", **kwargs),
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics", **kwargs),
            OTLPLogExporter(endpoint=f"{base}/v1/logs", **kwargs),
        )
    return (
        OTLPSpanExporter(**kwargs) if traces else None,
        OTLPMetricExporter(**kwargs) if metrics_on else None,
        OTLPLogExporter(**kwargs) if logs_on else None,
    )


def _prometheus(port: int, host: str) -> tuple[MetricReader, PrometheusEndpoint]:
    from prometheus_client import CollectorRegistry

    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
    except ImportError as exc:
        raise RuntimeError(
            "prometheus_port needs opentelemetry-exporter-prometheus (in the otel extra)"
        ) from exc
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    return reader, PrometheusEndpoint(registry, host, port)


def setup_telemetry(
    service_name: str | None = None,
    *,
    otlp_endpoint: str | None = None,
    protocol: Protocol | None = None,
    headers: Mapping[str, str] | None = None,
    console: bool = False,
    prometheus_port: int | None = None,
    prometheus_host: str = "127.0.0.1",
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Iterable[MetricReader] = (),
    log_exporters: Sequence[LogRecordExporter] = (),
    export_interval_s: float | None = None,
    export_timeout_s: float | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    set_global: bool = True,
    server_processes: bool = False,
    gpu: bool = False,
) -> TelemetryHandle:
    """Build SDK providers for traces, metrics and logs: OTLP export (``otlp_endpoint``
    or the ``OTEL_EXPORTER_OTLP_*`` variables, over ``http/protobuf`` or ``grpc``), console
    output, a Prometheus scrape endpoint (``prometheus_port``; 0 picks a free port), and
    any exporters/readers you pass. Spans are sampled as ``OTEL_TRACES_SAMPLER`` says
    (default: every span, or as its parent was).

    With ``set_global`` (the default) they become the global providers, which
    ``InstrumentedLlamaCppClient`` and ``LlamaCppInstrumentor`` use unless given others.
    ``server_processes``: also report the CPU time, memory and threads of every
    llama-server a ``ServerManager`` of this process runs (``ProcessMetrics``). ``gpu``:
    also report this machine's NVIDIA GPUs (``GpuMetrics``; the ``gpu`` extra and a driver,
    else one line says why there are none and nothing else changes).
    """
    attributes: dict[str, Any] = dict(resource_attributes or {})
    name = service_name or _env("OTEL_SERVICE_NAME")
    attributes["service.name"] = name or DEFAULT_SERVICE_NAME
    resource = Resource.create(attributes)
    disabled = (_env("OTEL_SDK_DISABLED") or "").lower() == "true"

    chosen = protocol or _env("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if chosen not in ("http/protobuf", "grpc"):
        raise ValueError(f"protocol must be 'http/protobuf' or 'grpc', got {chosen!r}")
    interval_ms = None if export_interval_s is None else export_interval_s * 1000.0
    if prometheus_port is not None and not 0 <= prometheus_port <= 65535:
        raise ValueError(f"prometheus_port must be 0..65535, got {prometheus_port}")

    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = list(metric_readers)
    exporters: list[SpanExporter] = list(span_exporters)
    log_sinks: list[LogRecordExporter] = list(log_exporters)
    closers: list[Any] = []
    endpoint: PrometheusEndpoint | None = None
    if not disabled:
        span_exporter, metric_exporter, log_exporter = _otlp_exporters(
            otlp_endpoint, chosen, headers, export_timeout_s
        )
        if log_exporter is not None:
            log_sinks.append(log_exporter)
        if prometheus_port is not None:  # before any reader's thread: a taken port leaks none
            reader, endpoint = _prometheus(prometheus_port, prometheus_host)
            readers.append(reader)
            closers.append(endpoint.close)
        if span_exporter is not None:
            exporters.append(span_exporter)
        if metric_exporter is not None:
            readers.append(
                PeriodicExportingMetricReader(metric_exporter, export_interval_millis=interval_ms)
            )
        if console:
            exporters.append(ConsoleSpanExporter())
            log_sinks.append(ConsoleLogRecordExporter())
            readers.append(
                PeriodicExportingMetricReader(
                    ConsoleMetricExporter(), export_interval_millis=interval_ms
                )
            )
    for exporter in exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if server_processes:
        from ._process_metrics import ProcessMetrics

        closers.insert(0, ProcessMetrics(meter_provider=meter_provider, started_servers=True).close)
    if gpu:
        from ._gpu_metrics import GpuMetrics

        closers.insert(0, GpuMetrics(meter_provider=meter_provider).close)
    logger_provider = LoggerProvider(resource=resource)
    for sink in log_sinks:
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(sink))
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        _logs.set_logger_provider(logger_provider)
    log.info(
        "telemetry set up for %s: %d span exporter(s), %d metric reader(s), %d log exporter(s)",
        attributes["service.name"],
        len(exporters),
        len(readers),
        len(log_sinks),
    )
    url = endpoint.url if endpoint is not None else None
    return TelemetryHandle(tracer_provider, meter_provider, url, logger_provider, closers, endpoint)
