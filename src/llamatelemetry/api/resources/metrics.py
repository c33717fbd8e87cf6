"""``/metrics``: the server's Prometheus counters (needs ``--metrics``)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from .._base import Call
from ._resource import Resource

__all__ = ["Metrics", "parse_prometheus"]


def parse_prometheus(text: str) -> list[Sample]:
    """Every sample of a Prometheus exposition, in order."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _text(data: Any) -> str:
    return str(data)


class Metrics(Resource):
    __slots__ = ()

    def get(self) -> str:
        """The raw Prometheus text (``llamacpp:prompt_tokens_total`` and friends)."""
        return self._client._execute(Call("GET", "/metrics", _text, text=True, operation="metrics"))

    def parse(self) -> list[Sample]:
        """The samples (``name``, ``labels``, ``value``), parsed by prometheus_client."""
        return self._client._execute(
            Call(
                "GET",
                "/metrics",
                lambda text: parse_prometheus(str(text)),
                text=True,
                operation="metrics",
            )
        )

    def values(self) -> dict[str, float]:
        """``{sample name: value}`` for unlabelled samples: the quick way to read a counter."""
        return self._client._execute(
            Call(
                "GET",
                "/metrics",
                lambda text: {s.name: s.value for s in parse_prometheus(str(text)) if not s.labels},
                text=True,
                operation="metrics",
            )
        )
