"""OpenTelemetry GenAI semantic-convention attributes of one llama-server call.

Pure functions from the request body and the response to attribute dicts, so every
surface (the instrumented client, the instrumentor, streams) names things alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from ..api import Timings
from ..api._internal import host_and_port, timings_of

__all__ = [
    "DEFAULTED",
    "count",
    "request_attributes",
    "response_attributes",
    "server_attributes",
    "span_name",
]

PROVIDER = "llama.cpp"

_REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",  # the openai SDK's newer name
    "n_predict": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "stream": "gen_ai.request.stream",
}
#: The parameters the conventions type as double, whatever number the caller wrote.
_DOUBLES = frozenset({"temperature", "top_p", "frequency_penalty", "presence_penalty"})
_TIMINGS = tuple(
    (name, f"llama_cpp.timings.{name}")
    for name in (
        "cache_n",
        "prompt_n",
        "prompt_ms",
        "prompt_per_token_ms",
        "prompt_per_second",
        "predicted_n",
        "predicted_ms",
        "predicted_per_token_ms",
        "predicted_per_second",
        "draft_n",
        "draft_n_accepted",
    )
)
#: A native answer's slot, and the tokens its context holds once the answer is made.
_SLOT_FIELDS = (
    ("id_slot", "llama_cpp.slot.id"),
    ("tokens_cached", "llama_cpp.slot.context.tokens"),
)
#: The share of drafted tokens accepted, on a server doing speculative decoding.
ACCEPTANCE = "llama_cpp.speculative.acceptance_rate"


def count(value: Any) -> int | None:
    """``value`` when it is a whole number >= 0, else None: a count read from an answer,
    which a hostile or older server may send as a bool, a string or a negative number."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def span_name(operation: str, model: str | None) -> str:
    return f"{operation} {model}" if model else operation


def server_attributes(base_url: str) -> dict[str, Any]:
    host, port = host_and_port(base_url)
    return {"server.address": host, "server.port": port}


#: The ``gen_ai.request.*`` attributes of a span whose values the client filled in from
#: its defaults (the spec's ``seed=0``, ``temperature=0.7``, ...) rather than the caller.
DEFAULTED = "llamatelemetry.request.defaulted"


def request_attributes(
    operation: str, body: Any, provider: str = PROVIDER, defaulted: tuple[str, ...] = ()
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
    }
    if not isinstance(body, Mapping):
        return attributes
    # A body names a few of the parameters: walk the body, not the table.
    for key, value in body.items():
        name = _REQUEST_PARAMS.get(key)
        if name is not None:
            if key in _DOUBLES and isinstance(value, int) and not isinstance(value, bool):
                attributes[name] = float(value)  # temperature=0 is the double 0.0
            elif isinstance(value, (bool, int, float)):
                attributes[name] = value
        elif key == "model":
            if isinstance(value, str):
                attributes["gen_ai.request.model"] = value
        elif key in ("stop", "stop_sequences") and isinstance(value, list) and value:
            attributes["gen_ai.request.stop_sequences"] = [str(s) for s in value]
    if defaulted:
        marked = _defaulted_names(defaulted)
        if marked:
            attributes[DEFAULTED] = marked
    return attributes


@lru_cache(maxsize=64)
def _defaulted_names(fields: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({_REQUEST_PARAMS[f] for f in fields if f in _REQUEST_PARAMS}))


def _field(obj: Any, name: str) -> Any:
    """``getattr(obj, name, None)``, without pydantic's ``__getattr__`` (an exception
    raised and caught) for a field a model does not have."""
    try:
        return obj.__dict__[name]  # a pydantic model's declared fields; a plain object's
    except (KeyError, AttributeError):
        pass
    extra = getattr(obj, "__pydantic_extra__", _NO_EXTRA)
    if extra is _NO_EXTRA or hasattr(type(obj), name):  # not pydantic's; a property
        return getattr(obj, name, None)
    return None if extra is None else extra.get(name)


_NO_EXTRA: Any = object()


def _usage(usage: Any, *, chat: bool) -> dict[str, Any]:
    """Token counts from any of the three shapes: OpenAI chat's (``prompt_tokens``),
    Responses' (``input_tokens``) and Anthropic's (``input_tokens`` without the cache,
    ``prompt_tokens`` being all of them)."""
    found: dict[str, Any] = {}
    prompt = _field(usage, "prompt_tokens")
    if prompt is None:
        prompt = _field(usage, "input_tokens")
    if prompt is not None:
        found["gen_ai.usage.input_tokens"] = prompt
    output = _field(usage, "completion_tokens")
    if output is None:
        output = _field(usage, "output_tokens")
    if output or chat or _field(usage, "output_tokens") is not None:
        found["gen_ai.usage.output_tokens"] = output or 0
    details = _field(usage, "prompt_tokens_details") or _field(usage, "input_tokens_details")
    cached = _field(details, "cached_tokens")
    if cached is None:
        cached = _field(usage, "cache_read_input_tokens")
    if cached is not None:
        found["gen_ai.usage.cache_read.input_tokens"] = cached
    out_details = _field(usage, "output_tokens_details") or _field(
        usage, "completion_tokens_details"
    )
    reasoning = (
        out_details.get("reasoning_tokens")
        if isinstance(out_details, dict)
        else _field(out_details, "reasoning_tokens")
    )
    if isinstance(reasoning, int) and not isinstance(reasoning, bool):
        found["gen_ai.usage.reasoning.output_tokens"] = reasoning
    return found


def response_attributes(response: Any, timings: Timings | None = None) -> dict[str, Any]:
    """From a typed response or the final stream state: id, model, finish reasons, usage,
    llama.cpp timings (``timings``: its ``timings_of``, when the caller has them already)."""
    attributes: dict[str, Any] = {}
    rid = getattr(response, "id", None)
    if isinstance(rid, str):
        attributes["gen_ai.response.id"] = rid
    model = getattr(response, "model", None)
    if isinstance(model, str):
        attributes["gen_ai.response.model"] = model
    choices = getattr(response, "choices", None)
    if choices:
        reasons = [c.finish_reason for c in choices if getattr(c, "finish_reason", None)]
        if reasons:
            attributes["gen_ai.response.finish_reasons"] = reasons
    elif getattr(response, "finish_reason", None):  # native /completion
        attributes["gen_ai.response.finish_reasons"] = [response.finish_reason]
        for name, attribute in _SLOT_FIELDS:  # the slot that served it, and its use after
            value = count(_field(response, name))
            if value is not None:
                attributes[attribute] = value
    usage = getattr(response, "usage", None)
    if usage is not None:
        attributes.update(_usage(usage, chat=getattr(response, "choices", None) is not None))
    if timings is None:
        timings = timings_of(response)
    if timings is not None:
        values = vars(timings)  # a Timings: its fields are in its instance dict
        for name, attribute in _TIMINGS:
            value = values.get(name)
            if value is not None:
                attributes[attribute] = value
        acceptance = timings.draft_acceptance
        if acceptance is not None:
            attributes[ACCEPTANCE] = acceptance
        if usage is None and timings.prompt_n is not None:  # native endpoints have no usage
            attributes["gen_ai.usage.input_tokens"] = (timings.prompt_n or 0) + (
                timings.cache_n or 0
            )
            attributes["gen_ai.usage.output_tokens"] = timings.predicted_n or 0
    return attributes
