"""Text completion: OpenAI's ``/v1/completions`` and llama.cpp's native ``/completion``
and ``/infill``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

from typing_extensions import Unpack

from .._calls_and_callers import Call, StreamFormat
from .._config import TimeoutTypes
from .._typed_streams import Stream
from .._types import Completion, NativeCompletion
from .._validation import check_text, check_token_ids
from ._params import SamplingParams, generation_call
from ._resource import Resource

__all__ = ["Completions", "complete_call", "infill_call"]

COMPLETION_STREAM = StreamFormat.of(Completion)
NATIVE_STREAM = StreamFormat.of(NativeCompletion, ends_with_done=False)


def _check_prompt(prompt: Any) -> Any:
    """A prompt is text, a list of token ids, or a list mixing both (llama.cpp's forms)."""
    if isinstance(prompt, str):
        return check_text("prompt", prompt)
    if isinstance(prompt, Sequence) and not isinstance(prompt, bytes):
        if not prompt:
            raise ValueError("prompt must not be empty")
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return check_token_ids("prompt", prompt)
        for i, part in enumerate(prompt):
            if isinstance(part, int) and not isinstance(part, bool):
                check_token_ids(f"prompt[{i}]", [part])  # a mixed prompt: ids and text
            elif isinstance(part, str):
                check_text(f"prompt[{i}]", part)
            elif isinstance(part, Sequence):
                check_token_ids(f"prompt[{i}]", part)
            else:
                raise TypeError(
                    f"prompt[{i}] must be a str or a list of token ids, not {type(part).__name__}"
                )
        return list(prompt)
    raise TypeError(f"prompt must be a str or a list of token ids, not {type(prompt).__name__}")


class Completions(Resource):
    """``client.completions.create(...)``: OpenAI-shaped text completion."""

    __slots__ = ()

    @overload
    def create(
        self,
        prompt: str | Sequence[Any],
        *,
        stream: Literal[False] = False,
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> Completion: ...
    @overload
    def create(
        self,
        prompt: str | Sequence[Any],
        *,
        stream: Literal[True],
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> Stream[Completion]: ...
    @overload
    def create(
        self,
        prompt: str | Sequence[Any],
        *,
        stream: bool,
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> Completion | Stream[Completion]: ...
    def create(
        self,
        prompt: str | Sequence[Any],
        *,
        stream: bool = False,
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> Completion | Stream[Completion]:
        """Continue ``prompt`` (``/v1/completions``); the same sampling parameters as chat."""
        fields: dict[str, Any] = {"prompt": _check_prompt(prompt)}
        if model is not None:
            fields["model"] = check_text("model", model)
        return self._client.execute_call(  # type: ignore[no-any-return]
            generation_call(
                "/v1/completions",
                fields,
                params,
                parse=Completion.model_validate,
                stream_format=COMPLETION_STREAM,
                operation="text_completion",
                openai=True,
                stream=stream,
                timeout=timeout,
                total_timeout=total_timeout,
                extra_headers=extra_headers,
                extra_body=extra_body,
            )
        )


def _native_call(
    path: str, fields: dict[str, Any], operation: str, params: Mapping[str, Any], **options: Any
) -> Call[Any]:
    """``/completion`` and ``/infill``: llama.cpp's native shape (``n_predict``, ``content``)."""
    return generation_call(
        path,
        fields,
        params,
        parse=NativeCompletion.model_validate,
        stream_format=NATIVE_STREAM,
        operation=operation,
        openai=False,
        **options,
    )


def infill_call(
    input_prefix: Any,
    input_suffix: Any,
    params: Mapping[str, Any],
    *,
    input_extra: Any,
    prompt: Any,
    **options: Any,
) -> Call[Any]:
    fields: dict[str, Any] = {
        "input_prefix": check_text("input_prefix", input_prefix, allow_empty=True),
        "input_suffix": check_text("input_suffix", input_suffix, allow_empty=True),
    }
    if not fields["input_prefix"] and not fields["input_suffix"]:
        raise ValueError("infill needs input_prefix or input_suffix (or both)")
    if prompt is not None and check_text("prompt", prompt, allow_empty=True):
        fields["prompt"] = prompt
    if input_extra is not None:
        if not isinstance(input_extra, Sequence) or isinstance(input_extra, (str, bytes)):
            raise TypeError("input_extra must be a list of {'filename': ..., 'text': ...} dicts")
        for i, item in enumerate(input_extra):
            if not isinstance(item, Mapping) or not isinstance(item.get("text"), str):
                raise TypeError(
                    f"input_extra[{i}] must be a dict with a 'text' str (and optionally 'filename')"
                )
        fields["input_extra"] = list(input_extra)
    return _native_call("/infill", fields, "infill", params, **options)


def complete_call(prompt: Any, params: Mapping[str, Any], **options: Any) -> Call[Any]:
    """The request of a native ``/completion``: ``params`` are its sampling parameters,
    ``options`` the call's (``stream``, ``timeout``, ``total_timeout``, ``extra_body``)."""
    return _native_call(
        "/completion", {"prompt": _check_prompt(prompt)}, "text_completion", params, **options
    )
