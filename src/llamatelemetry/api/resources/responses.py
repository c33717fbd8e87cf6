"""``/v1/responses`` (OpenAI's Responses API) and ``/v1/messages`` (Anthropic's Messages
API), as llama-server serves them: ``client.responses.create(...)``,
``client.messages.create(...)``, ``client.messages.count_tokens(...)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

from .._calls_and_callers import Call, StreamFormat
from .._config import TimeoutTypes, check_total_timeout
from .._responses_and_messages import (
    MESSAGE_LAST_EVENTS,
    RESPONSE_LAST_EVENTS,
    Message,
    MessageAccumulator,
    MessageStreamEvent,
    Response,
    ResponseAccumulator,
    ResponseStreamEvent,
)
from .._typed_streams import Stream
from .._validation import (
    check_bool,
    check_int,
    check_json,
    check_messages,
    check_text,
)
from ._params import (
    INT32_MAX,
    SAMPLING_DEFAULTS,
    check_extra_body,
    check_sampling,
    check_tools,
    prompt_fields,
)
from ._resource import Resource
from .tokens import count_tokens_call

__all__ = ["Responses", "Messages", "responses_call", "messages_call"]

RESPONSE_STREAM = StreamFormat(
    ResponseStreamEvent.model_validate,
    ends_with_done=False,
    last_types=RESPONSE_LAST_EVENTS,
    accumulator=ResponseAccumulator,
)
MESSAGE_STREAM = StreamFormat(
    MessageStreamEvent.model_validate,
    ends_with_done=False,
    last_types=MESSAGE_LAST_EVENTS,
    accumulator=MessageAccumulator,
)
_DEFAULT_MAX_TOKENS = SAMPLING_DEFAULTS["max_tokens"]


def _sampling(
    body: dict[str, Any],
    *,
    temperature: Any,
    top_p: Any,
    stream: Any,
    model: Any,
    tools: Any,
    tool_choice: Any,
    extra_body: Any,
) -> None:
    """The fields both APIs share, checked and added to ``body``."""
    checked = {
        "temperature": check_sampling("temperature", temperature),
        "top_p": check_sampling("top_p", top_p),
        "model": None if model is None else check_text("model", model),
    }
    body.update({k: v for k, v in checked.items() if v is not None})
    body["stream"] = check_bool("stream", stream)
    if tools is not None:
        body["tools"] = check_tools(tools)
    if tool_choice is not None:
        check_json("tool_choice", tool_choice)
        body["tool_choice"] = tool_choice
    body.update(check_extra_body(extra_body))


def _call(
    path: str, body: dict[str, Any], parse: Any, fmt: Any, stream: bool, **kw: Any
) -> Call[Any]:
    return Call(
        "POST",
        path,
        parse,
        body=body,
        stream=fmt if stream else None,
        timeout=kw["timeout"],
        total_timeout=check_total_timeout(kw["total_timeout"]),
        headers=kw["extra_headers"],
        operation="chat",
    )


def responses_call(
    input: Any,
    *,
    instructions: Any = None,
    max_output_tokens: Any = _DEFAULT_MAX_TOKENS,
    temperature: Any = None,
    top_p: Any = None,
    stream: Any = False,
    model: Any = None,
    tools: Any = None,
    tool_choice: Any = None,
    timeout: TimeoutTypes = None,
    total_timeout: float | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> Call[Any]:
    if isinstance(input, str):
        body: dict[str, Any] = {"input": check_text("input", input)}
    else:
        body = {"input": check_messages(input)}
    if instructions is not None:
        body["instructions"] = check_text("instructions", instructions)
    if max_output_tokens is not None:
        body["max_output_tokens"] = check_int(
            "max_output_tokens", max_output_tokens, minimum=1, maximum=INT32_MAX
        )
    _sampling(
        body,
        temperature=temperature,
        top_p=top_p,
        stream=stream,
        model=model,
        tools=tools,
        tool_choice=tool_choice,
        extra_body=extra_body,
    )
    return _call(
        "/v1/responses",
        body,
        Response.model_validate,
        RESPONSE_STREAM,
        stream,
        timeout=timeout,
        total_timeout=total_timeout,
        extra_headers=extra_headers,
    )


def _system(system: Any) -> Any:
    if isinstance(system, str):
        return check_text("system", system)
    if isinstance(system, Sequence) and all(isinstance(b, Mapping) for b in system):
        check_json("system", system)
        return list(system)
    raise TypeError(
        f"system must be a str or a list of content blocks, not {type(system).__name__}"
    )


def _stop_sequences(stop: Any) -> list[str]:
    if isinstance(stop, str) or not isinstance(stop, Sequence):
        raise TypeError("stop_sequences must be a list of str")
    return [check_text(f"stop_sequences[{i}]", s) for i, s in enumerate(stop)]


def messages_call(
    messages: Any,
    max_tokens: Any,
    *,
    system: Any = None,
    temperature: Any = None,
    top_p: Any = None,
    top_k: Any = None,
    stop_sequences: Any = None,
    stream: Any = False,
    model: Any = None,
    tools: Any = None,
    tool_choice: Any = None,
    timeout: TimeoutTypes = None,
    total_timeout: float | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> Call[Any]:
    body: dict[str, Any] = {
        "messages": check_messages(messages),
        "max_tokens": check_int("max_tokens", max_tokens, minimum=1, maximum=INT32_MAX),
    }
    if system is not None:
        body["system"] = _system(system)
    if top_k is not None:
        body["top_k"] = check_sampling("top_k", top_k)
    if stop_sequences is not None:
        body["stop_sequences"] = _stop_sequences(stop_sequences)
    _sampling(
        body,
        temperature=temperature,
        top_p=top_p,
        stream=stream,
        model=model,
        tools=tools,
        tool_choice=tool_choice,
        extra_body=extra_body,
    )
    return _call(
        "/v1/messages",
        body,
        Message.model_validate,
        MESSAGE_STREAM,
        stream,
        timeout=timeout,
        total_timeout=total_timeout,
        extra_headers=extra_headers,
    )


class Responses(Resource):
    """``client.responses``: OpenAI's Responses API on llama-server."""

    __slots__ = ()

    @overload
    def create(
        self,
        input: str | Sequence[Mapping[str, Any]],
        *,
        instructions: str | None = None,
        max_output_tokens: int | None = 128,
        temperature: float | None = None,
        top_p: float | None = None,
        stream: Literal[False] = False,
        model: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Response: ...
    @overload
    def create(
        self,
        input: str | Sequence[Mapping[str, Any]],
        *,
        instructions: str | None = None,
        max_output_tokens: int | None = 128,
        temperature: float | None = None,
        top_p: float | None = None,
        stream: Literal[True],
        model: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Stream[ResponseStreamEvent]: ...
    def create(
        self,
        input: str | Sequence[Mapping[str, Any]],
        *,
        instructions: str | None = None,
        max_output_tokens: int | None = 128,
        temperature: float | None = None,
        top_p: float | None = None,
        stream: bool = False,
        model: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Response | Stream[ResponseStreamEvent]:
        """A response to ``input`` (text, or a list of messages), with OpenAI's parameter
        names; ``max_output_tokens`` is capped at 128 unless you say otherwise (None: the
        server's default, which is no cap). Streamed, the events are typed
        (``response.output_text.delta`` ... ``response.completed``) and the stream's
        ``get_final_completion()`` is the whole :class:`Response`."""
        return self._client.execute_call(  # type: ignore[no-any-return]
            responses_call(
                input,
                instructions=instructions,
                max_output_tokens=max_output_tokens,
                temperature=temperature,
                top_p=top_p,
                stream=stream,
                model=model,
                tools=tools,
                tool_choice=tool_choice,
                timeout=timeout,
                total_timeout=total_timeout,
                extra_headers=extra_headers,
                extra_body=extra_body,
            )
        )


class Messages(Resource):
    """``client.messages``: Anthropic's Messages API on llama-server."""

    __slots__ = ()

    @overload
    def create(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        *,
        system: str | Sequence[Mapping[str, Any]] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop_sequences: Sequence[str] | None = None,
        stream: Literal[False] = False,
        model: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Message: ...
    @overload
    def create(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        *,
        system: str | Sequence[Mapping[str, Any]] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop_sequences: Sequence[str] | None = None,
        stream: Literal[True],
        model: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Stream[MessageStreamEvent]: ...
    def create(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        *,
        system: str | Sequence[Mapping[str, Any]] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop_sequences: Sequence[str] | None = None,
        stream: bool = False,
        model: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Message | Stream[MessageStreamEvent]:
        """The assistant's message (content blocks, ``stop_reason``, ``usage``), with
        Anthropic's parameter names (``max_tokens`` is required there, and here).
        Streamed, the events are typed (``message_start`` ... ``message_stop``) and the
        stream's ``get_final_completion()`` is the whole :class:`Message`."""
        return self._client.execute_call(  # type: ignore[no-any-return]
            messages_call(
                messages,
                max_tokens,
                system=system,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                stop_sequences=stop_sequences,
                stream=stream,
                model=model,
                tools=tools,
                tool_choice=tool_choice,
                timeout=timeout,
                total_timeout=total_timeout,
                extra_headers=extra_headers,
                extra_body=extra_body,
            )
        )

    def count_tokens(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        system: str | Sequence[Mapping[str, Any]] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        model: str | None = None,
        timeout: TimeoutTypes = None,
    ) -> int:
        """The prompt tokens ``create`` would count for these messages (cached ones too)."""
        body = prompt_fields(messages, tools, model)
        if system is not None:
            body["system"] = _system(system)
        return self._client.execute_call(
            count_tokens_call("/v1/messages/count_tokens", body, timeout)
        )
