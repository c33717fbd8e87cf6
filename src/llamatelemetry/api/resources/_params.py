"""The sampling parameters every generation endpoint shares, checked once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._validation import check_bool, check_int, check_number, check_stop, check_text

__all__ = ["sampling_body", "check_extra"]

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
    "n_probs": (0, None),
    "repeat_last_n": (-1, None),
    "mirostat": (0, 2),
    "n_keep": (-1, None),
    "dry_allowed_length": (0, None),
    "dry_penalty_last_n": (-1, None),
    "id_slot": (-1, None),
    "n_indent": (0, None),
    "t_max_predict_ms": (0, None),
    "top_logprobs": (0, 20),
}
_EXTRA_BOOLS = ("cache_prompt", "ignore_eos", "return_tokens", "timings_per_token",
                "post_sampling_probs", "return_progress", "logprobs", "parallel_tool_calls")
_EXTRA_MAPPINGS = ("json_schema", "response_format", "chat_template_kwargs", "stream_options")


def check_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Check the llama.cpp parameters we know the type of; pass the rest through."""
    for name, value in extra.items():
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
                raise TypeError("logit_bias must be a dict {token: bias} or a list of "
                                f"[token, bias] pairs, not {type(value).__name__}")
    return dict(extra)


def sampling_body(
    *,
    max_tokens: Any,
    temperature: Any,
    top_p: Any,
    top_k: Any,
    seed: Any,
    stop: Any,
    frequency_penalty: Any,
    presence_penalty: Any,
    stream: Any,
    extra: Mapping[str, Any],
    max_tokens_key: str = "max_tokens",
    allow_zero_tokens: bool = False,
) -> dict[str, Any]:
    """The request fields shared by chat, completions, /completion and /infill.

    ``None`` leaves a parameter to the server's default. ``max_tokens=-1`` means "until the
    model stops or the context is full", as in llama.cpp.
    """
    body: dict[str, Any] = {}
    values = {
        max_tokens_key: check_int("max_tokens", max_tokens, minimum=-1),
        "temperature": check_number("temperature", temperature, minimum=0.0),
        "top_p": check_number("top_p", top_p, minimum=0.0, maximum=1.0),
        "top_k": check_int("top_k", top_k, minimum=0),
        "seed": check_int("seed", seed, minimum=-1, maximum=2**32 - 1),
        "stop": check_stop(stop),
        "frequency_penalty": check_number("frequency_penalty", frequency_penalty,
                                          minimum=-2.0, maximum=2.0),
        "presence_penalty": check_number("presence_penalty", presence_penalty,
                                         minimum=-2.0, maximum=2.0),
    }
    if max_tokens == 0 and not allow_zero_tokens:
        raise ValueError("max_tokens must be a positive number of tokens (or -1 for no limit)")
    for key, value in values.items():
        if value is not None:
            body[key] = value
    check_bool("stream", stream)
    body["stream"] = stream
    body.update(check_extra(extra))
    return body
