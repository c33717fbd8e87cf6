"""The sampling parameters every generation endpoint shares, checked once."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from typing_extensions import TypedDict

from .._calls_and_callers import Call, StreamFormat
from .._config import TimeoutTypes, check_total_timeout
from .._validation import (
    check_bool,
    check_int,
    check_json,
    check_messages,
    check_number,
    check_stop,
    check_text,
)

__all__ = [
    "SAMPLING_DEFAULTS",
    "CoreSamplingParams",
    "SamplingParams",
    "check_extra",
    "check_extra_body",
    "check_sampling",
    "check_tools",
    "defaulted_fields",
    "prompt_fields",
    "generation_call",
    "sampling_body",
]

INT32_MAX = 2**31 - 1  # llama.cpp reads counts into an int32; a larger value would wrap


class CoreSamplingParams(TypedDict, total=False):
    """The sampling parameters of every generation call but the constraints on the output's
    form (``SamplingParams`` adds those; ``chat.completions.parse`` takes these, its own
    ``response_format`` being a model class).

    The first eight are OpenAI's, with these defaults when left out: ``max_tokens`` 128,
    ``temperature`` 0.7, ``top_p`` 0.9, ``top_k`` 40, ``seed`` 0, ``stop`` None,
    ``frequency_penalty`` 0.0, ``presence_penalty`` 0.0 (``SAMPLING_DEFAULTS``); ``None``
    leaves one to the server's own default. The rest are llama.cpp's, sent only when given
    and checked before sending. A field the types do not name goes in ``extra_body``.
    """

    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    seed: int | None
    stop: str | Sequence[str] | None
    frequency_penalty: float | None
    presence_penalty: float | None
    # llama.cpp's own
    min_p: float
    typical_p: float
    repeat_penalty: float
    dynatemp_range: float
    dynatemp_exponent: float
    mirostat_tau: float
    mirostat_eta: float
    xtc_probability: float
    xtc_threshold: float
    top_n_sigma: float
    dry_multiplier: float
    dry_base: float
    n_predict: int
    n_probs: int
    min_keep: int
    repeat_last_n: int
    mirostat: int
    n_keep: int
    dry_allowed_length: int
    dry_penalty_last_n: int
    id_slot: int
    n_indent: int
    t_max_predict_ms: int
    top_logprobs: int
    cache_prompt: bool
    ignore_eos: bool
    return_tokens: bool
    timings_per_token: bool
    post_sampling_probs: bool
    return_progress: bool
    logprobs: bool
    parallel_tool_calls: bool
    chat_template_kwargs: Mapping[str, Any]
    stream_options: Mapping[str, Any]
    tools: Sequence[Mapping[str, Any]]
    tool_choice: str | Mapping[str, Any]
    logit_bias: Mapping[Any, float] | Sequence[Sequence[Any]]


class SamplingParams(CoreSamplingParams, total=False):
    """The sampling parameters of every generation call (chat, completions, ``complete``,
    ``infill`` and the engine's calls), defined once: :class:`CoreSamplingParams` and the
    constraints on the output's form, checked before sending."""

    json_schema: Mapping[str, Any]
    response_format: Mapping[str, Any]
    grammar: str


SAMPLING_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "max_tokens": 128,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 0,
        "stop": None,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
    }
)

# llama.cpp's extra sampling parameters with a known type: checked before sending.
_EXTRA_NUMBERS: dict[str, tuple[float | None, float | None]] = {
    "min_p": (0.0, 1.0),
    "typical_p": (0.0, 1.0),
    "repeat_penalty": (0.0, None),
    "dynatemp_range": (0.0, None),
    "dynatemp_exponent": (0.0, None),
    "mirostat_tau": (0.0, None),
    "mirostat_eta": (0.0, None),
    "xtc_probability": (0.0, 1.0),
    "xtc_threshold": (0.0, 1.0),
    "top_n_sigma": (None, None),
    "dry_multiplier": (0.0, None),
    "dry_base": (0.0, None),
}
_EXTRA_INTS: dict[str, tuple[int | None, int | None]] = {
    "n_predict": (-1, INT32_MAX),
    "n_probs": (0, INT32_MAX),
    "min_keep": (0, INT32_MAX),
    "repeat_last_n": (-1, INT32_MAX),
    "mirostat": (0, 2),
    "n_keep": (-1, INT32_MAX),
    "dry_allowed_length": (0, INT32_MAX),
    "dry_penalty_last_n": (-1, INT32_MAX),
    "id_slot": (-1, INT32_MAX),
    "n_indent": (0, INT32_MAX),
    "t_max_predict_ms": (0, 2**63 - 1),
    "top_logprobs": (0, 20),
}
_EXTRA_BOOLS = (
    "cache_prompt",
    "ignore_eos",
    "return_tokens",
    "timings_per_token",
    "post_sampling_probs",
    "return_progress",
    "logprobs",
    "parallel_tool_calls",
)
_EXTRA_MAPPINGS = ("json_schema", "response_format", "chat_template_kwargs", "stream_options")
_EXTRA_OTHER = ("grammar", "tools", "tool_choice", "logit_bias")
_KNOWN_EXTRAS = frozenset(
    [*_EXTRA_NUMBERS, *_EXTRA_INTS, *_EXTRA_BOOLS, *_EXTRA_MAPPINGS, *_EXTRA_OTHER]
)
# The named parameters of the generation methods: an extra keyword that is a near miss of
# one of them is a typo that the server would silently ignore.
_NAMED = (
    *SAMPLING_DEFAULTS,
    "messages",
    "prompt",
    "stream",
    "model",
    "timeout",
    "total_timeout",
    "extra_headers",
    "extra_body",
    "input_prefix",
    "input_suffix",
    "input_extra",
    "stop_sequences",
)


def _check_not_a_typo(name: str) -> None:
    if name in _KNOWN_EXTRAS:
        return
    close = difflib.get_close_matches(name, _NAMED, n=1, cutoff=0.8)
    if close:
        raise TypeError(f"unexpected keyword argument {name!r}: did you mean {close[0]!r}?")


def check_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Check the llama.cpp parameters we know the type of; pass the rest through, as long
    as JSON can carry them (no NaN/inf, lone surrogates or arbitrary objects)."""
    for name, value in extra.items():
        _check_not_a_typo(name)
        if name in _EXTRA_NUMBERS:
            low, high = _EXTRA_NUMBERS[name]
            check_number(name, value, minimum=low, maximum=high)
        elif name in _EXTRA_INTS:
            low_i, high_i = _EXTRA_INTS[name]
            check_int(name, value, minimum=low_i, maximum=high_i)
        elif name in _EXTRA_BOOLS:
            check_bool(name, value)
        elif name in _EXTRA_MAPPINGS:
            if not isinstance(value, Mapping):
                raise TypeError(f"{name} must be a dict, not {type(value).__name__}")
        elif name == "grammar":
            check_text(name, value)
        elif name == "tools":
            if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
                raise TypeError(f"tools must be a list of tool dicts, not {type(value).__name__}")
        elif name == "logit_bias":
            if not isinstance(value, (Mapping, Sequence)) or isinstance(value, (str, bytes)):
                raise TypeError(
                    "logit_bias must be a dict {token: bias} or a list of "
                    f"[token, bias] pairs, not {type(value).__name__}"
                )
        check_json(name, value)
    return dict(extra)


def check_extra_body(extra_body: Any) -> Mapping[str, Any]:
    """Request fields the types do not name, sent as they are (merged last)."""
    if extra_body is None:
        return {}
    if not isinstance(extra_body, Mapping):
        raise TypeError(f"extra_body must be a dict, not {type(extra_body).__name__}")
    check_json("extra_body", extra_body)
    return extra_body


def check_tools(tools: Any) -> list[Any]:
    """A request's ``tools``: a list of tool dicts JSON can carry."""
    return list(check_extra({"tools": tools})["tools"])


def prompt_fields(messages: Any, tools: Any, model: Any) -> dict[str, Any]:
    """The fields that make a prompt: its messages, the tools it offers, the model."""
    fields: dict[str, Any] = {"messages": check_messages(messages)}
    if tools is not None:
        fields["tools"] = check_tools(tools)
    if model is not None:
        fields["model"] = check_text("model", model)
    return fields


# The named sampling parameters' ranges (the extras' are in _EXTRA_NUMBERS/_EXTRA_INTS):
# every API that takes one (chat, completions, Responses, Messages) checks it alike.
_NAMED_NUMBERS: dict[str, tuple[float | None, float | None]] = {
    "temperature": (0.0, None),
    "top_p": (0.0, 1.0),
    "frequency_penalty": (-2.0, 2.0),
    "presence_penalty": (-2.0, 2.0),
}
_NAMED_INTS: dict[str, tuple[int, int]] = {"top_k": (0, INT32_MAX), "seed": (-1, 2**32 - 1)}


def check_sampling(name: str, value: Any) -> Any:
    """One named sampling parameter, checked against its range; None passes."""
    if name in _NAMED_INTS:
        low, high = _NAMED_INTS[name]
        return check_int(name, value, minimum=low, maximum=high)
    low_f, high_f = _NAMED_NUMBERS[name]
    return check_number(name, value, minimum=low_f, maximum=high_f)


def sampling_body(params: Mapping[str, Any], *, native: bool) -> dict[str, Any]:
    """The request fields of ``params`` (a generation call's keywords): the sampling
    parameters, each defaulted from ``SAMPLING_DEFAULTS`` and checked, then llama.cpp's
    extras, checked where their type is known and passed through otherwise.

    ``None`` leaves a parameter to the server's default. ``max_tokens=-1`` means "until the
    model stops or the context is full", as in llama.cpp; native endpoints name it
    ``n_predict`` and also take 0 (prompt processing only).
    """
    values = {**SAMPLING_DEFAULTS, **params}
    max_tokens = values["max_tokens"]
    checked = {
        "n_predict" if native else "max_tokens": check_int(
            "max_tokens", max_tokens, minimum=-1, maximum=INT32_MAX
        ),
        **{name: check_sampling(name, values[name]) for name in (*_NAMED_NUMBERS, *_NAMED_INTS)},
        "stop": check_stop(values["stop"]),
    }
    if max_tokens == 0 and not native:
        raise ValueError("max_tokens must be a positive number of tokens (or -1 for no limit)")
    body = {key: value for key, value in checked.items() if value is not None}
    body.update(check_extra({k: v for k, v in params.items() if k not in SAMPLING_DEFAULTS}))
    return body


def generation_call(
    path: str,
    fields: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    parse: Any,
    stream_format: StreamFormat[Any],
    operation: str,
    openai: bool,
    stream: Any,
    timeout: TimeoutTypes,
    total_timeout: float | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> Call[Any]:
    """The one request of every generation endpoint: chat, completions, /completion, /infill.

    OpenAI-style endpoints take ``max_tokens`` and, when streaming, are always asked for
    usage (so the last chunk carries usage and timings); native ones take ``n_predict``.
    ``extra_body`` (fields the types do not name) is merged last, as openai's is.
    """
    body = dict(fields)
    body.update(sampling_body(params, native=not openai))
    check_bool("stream", stream)
    body["stream"] = stream
    extra = check_extra_body(extra_body)
    body.update(extra)
    if stream and openai:
        body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
    return Call(
        "POST",
        path,
        parse,
        body=body,
        stream=stream_format if stream else None,
        timeout=timeout,
        total_timeout=check_total_timeout(total_timeout),
        headers=extra_headers,
        operation=operation,
        defaulted=defaulted_fields(params, extra, native=not openai),
    )


def defaulted_fields(
    params: Mapping[str, Any], extra_body: Mapping[str, Any], *, native: bool
) -> tuple[str, ...]:
    """The body's fields that hold ``SAMPLING_DEFAULTS`` the caller never gave (neither as
    a keyword nor in ``extra_body``): telemetry marks them, so a span does not present the
    spec's ``seed=0`` as the caller's choice."""
    defaulted = []
    for name, value in SAMPLING_DEFAULTS.items():
        field = "n_predict" if native and name == "max_tokens" else name
        given = (name, field)
        if value is not None and not any(g in params or g in extra_body for g in given):
            defaulted.append(field)
    return tuple(defaulted)
