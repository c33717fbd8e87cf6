"""``/metrics``: the server's Prometheus counters (needs ``--metrics``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from .._calls_and_callers import Call
from ._resource import Resource
from .models import model_params

__all__ = ["Metrics", "parse_prometheus"]

T = TypeVar("T")


def parse_prometheus(text: str) -> list[Sample]:
    """Every sample of a Prometheus exposition, in order."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _text(data: Any) -> str:
    return str(data)


class Metrics(Resource):
    __slots__ = ()

    # ``model=``: one of a router's loaded models (a router has no metrics of its own).

    def get(self, model: str | None = None) -> str:
        """The raw Prometheus text (``llamacpp:prompt_tokens_total`` and friends)."""
        return self._client.execute_call(_metrics_call(_text, model))

    def parse(self, model: str | None = None) -> list[Sample]:
        """The samples (``name``, ``labels``, ``value``), parsed by prometheus_client."""
        return self._client.execute_call(
            _metrics_call(lambda text: parse_prometheus(str(text)), model)
        )

    def values(self, model: str | None = None) -> dict[str, float]:
        """``{sample name: value}`` for unlabelled samples: the quick way to read a counter."""
        return self._client.execute_call(_metrics_call(_unlabelled, model))


def _unlabelled(text: Any) -> dict[str, float]:
    return {s.name: s.value for s in parse_prometheus(str(text)) if not s.labels}


def _metrics_call(parse: Callable[[Any], T], model: str | None) -> Call[T]:
    return Call(
        "GET", "/metrics", parse, params=model_params(model), text=True, operation="metrics"
    )
