"""A local OTLP/HTTP receiver that decodes what exporters send (opentelemetry-proto).

```python
with OTLPReceiver() as receiver:
    telemetry = setup_telemetry(otlp_endpoint=receiver.url, set_global=False)
    ...
    telemetry.force_flush()
    assert receiver.spans()[0]["name"] == "chat"
```

``status`` and ``delay`` make it a failing or slow collector, for tests of what the
application sees when telemetry export goes wrong.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .._closing import Closing

__all__ = ["OTLPReceiver"]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in any_value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


class OTLPReceiver(Closing):
    def __init__(self, *, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.requests: list[tuple[str, bytes]] = []  # (path, decoded protobuf bytes)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length)
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.requests.append((self.path, body))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802 - what a separate process reports
                body = json.dumps(
                    {"spans": len(receiver.spans()), "requests": len(receiver.requests)}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def _bodies(self, path: str) -> list[bytes]:
        with self._lock:
            return [body for p, body in self.requests if p == path]

    def spans(self) -> list[dict[str, Any]]:
        """Every span received: name, kind, attributes, status code, ids, resource."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        spans = []
        for body in self._bodies("/v1/traces"):
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        spans.append(
                            {
                                "name": span.name,
                                "kind": span.kind,
                                "attributes": _attributes(span.attributes),
                                "status": span.status.code,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "scope": scope_spans.scope.name,
                                "resource": resource,
                            }
                        )
        return spans

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        """Metric name → data points (attributes, and count/sum/bounds or value)."""
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )

        found: dict[str, list[dict[str, Any]]] = {}
        for body in self._bodies("/v1/metrics"):
            request = ExportMetricsServiceRequest.FromString(body)
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        kind = metric.WhichOneof("data")
                        for point in getattr(metric, kind).data_points:
                            entry: dict[str, Any] = {
                                "attributes": _attributes(point.attributes),
                                "unit": metric.unit,
                            }
                            if kind == "histogram":
                                entry.update(
                                    count=point.count,
                                    sum=point.sum,
                                    bounds=list(point.explicit_bounds),
                                )
                            else:
                                entry["value"] = point.as_double or point.as_int
                            found.setdefault(metric.name, []).append(entry)
        return found

    def logs(self) -> list[dict[str, Any]]:
        """Every log record received: event name, body, attributes, trace and span ids,
        scope, resource."""
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
        )

        records = []
        for body in self._bodies("/v1/logs"):
            request = ExportLogsServiceRequest.FromString(body)
            for resource_logs in request.resource_logs:
                resource = _attributes(resource_logs.resource.attributes)
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        records.append(
                            {
                                "event_name": record.event_name,
                                "body": _value(record.body),
                                "attributes": _attributes(record.attributes),
                                "trace_id": record.trace_id.hex(),
                                "span_id": record.span_id.hex(),
                                "scope": scope_logs.scope.name,
                                "resource": resource,
                            }
                        )
        return records

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


if __name__ == "__main__":  # a collector in its own process: prints its URL, serves until killed
    import signal

    with OTLPReceiver() as _receiver:
        print(_receiver.url, flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
