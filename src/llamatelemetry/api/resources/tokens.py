"""``/tokenize``, ``/detokenize`` and ``/apply-template``: the model's own text handling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._calls_and_callers import Call
from .._validation import check_bool, check_messages, check_text, check_token_ids

__all__ = ["tokenize_call", "detokenize_call", "apply_template_call", "count_tokens_call"]


def _input_tokens(data: Any) -> int:
    count = data["input_tokens"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"input_tokens is not a count: {count!r}")
    return count


def count_tokens_call(path: str, body: dict[str, Any], timeout: Any) -> Call[int]:
    """The prompt-token count of a request (the chat template applied), as llama-server's
    counting endpoints give it: what a generation of the same request counts."""
    return Call("POST", path, _input_tokens, body=body, timeout=timeout, operation="count_tokens")


def _tokens(data: Mapping[str, Any]) -> list[Any]:
    tokens = data["tokens"]
    if not isinstance(tokens, list):
        raise TypeError(f"'tokens' is a {type(tokens).__name__}, not a list")
    return tokens


def tokenize_call(
    text: Any, *, add_special: bool, parse_special: bool, with_pieces: bool
) -> Call[list[Any]]:
    body = {
        "content": check_text("text", text, allow_empty=True),
        "add_special": check_bool("add_special", add_special),
        "parse_special": check_bool("parse_special", parse_special),
        "with_pieces": check_bool("with_pieces", with_pieces),
    }
    return Call("POST", "/tokenize", _tokens, body=body, operation="tokenize")


def detokenize_call(ids: Sequence[int]) -> Call[str]:
    body = {"tokens": check_token_ids("ids", ids)}
    return Call(
        "POST", "/detokenize", lambda data: str(data["content"]), body=body, operation="detokenize"
    )


def apply_template_call(messages: Any) -> Call[str]:
    body = {"messages": check_messages(messages)}
    return Call(
        "POST",
        "/apply-template",
        lambda data: str(data["prompt"]),
        body=body,
        operation="apply_template",
    )
