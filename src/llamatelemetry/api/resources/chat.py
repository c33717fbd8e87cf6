"""``/v1/chat/completions``: ``client.chat.completions.create(...)``."""

from __future__ import annotations

import dataclasses
import functools
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

from pydantic import BaseModel, ValidationError
from typing_extensions import Unpack

from .._api_errors import APIError, StructuredOutputError, ToolsIgnoredWarning
from .._calls_and_callers import Call, Caller, Flow, StreamFormat
from .._chat_accumulator import ChatAccumulator
from .._config import TimeoutTypes
from .._typed_streams import Stream
from .._types import ChatCompletion, ChatCompletionChunk, M, ParsedChatCompletion
from ._params import CoreSamplingParams, SamplingParams, generation_call, prompt_fields
from ._resource import Resource
from .tokens import count_tokens_call

__all__ = ["Chat", "ChatCompletions", "CHAT_STREAM"]

CHAT_STREAM = StreamFormat.of(ChatCompletionChunk, accumulator=ChatAccumulator)

# The clients that have asked their server whether its chat template can use tools (once).
_TOOLS_CHECKED: weakref.WeakSet[Caller] = weakref.WeakSet()


class ChatCompletions(Resource):
    __slots__ = ()

    @overload
    def create(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: Literal[False] = False,
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> ChatCompletion: ...
    @overload
    def create(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: Literal[True],
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> Stream[ChatCompletionChunk]: ...
    @overload
    def create(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: bool,
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> ChatCompletion | Stream[ChatCompletionChunk]: ...
    def create(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: bool = False,
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """Generate the assistant's reply to ``messages``.

        The sampling parameters are :class:`SamplingParams` (OpenAI's, with llama.cpp's
        ``min_p``, ``repeat_penalty``, ``grammar``, ``json_schema``, ``response_format``,
        ``tools``, ... beside them); ``extra_body`` carries any other request field. With
        ``stream=True`` the result is a :class:`Stream` of chunks whose last one carries
        ``usage`` and ``timings``. ``timeout`` bounds each wait on the socket;
        ``total_timeout`` the whole call, its retries and, for a stream, the reading of every
        chunk (see the client's options).
        """
        return send_chat(  # type: ignore[no-any-return]
            self._client,
            chat_call(
                messages,
                params,
                stream=stream,
                model=model,
                timeout=timeout,
                total_timeout=total_timeout,
                extra_headers=extra_headers,
                extra_body=extra_body,
            ),
        )

    def parse(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        response_format: type[M],
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[CoreSamplingParams],
    ) -> ParsedChatCompletion[M]:
        """A reply constrained by the server to ``response_format``'s JSON schema (a pydantic
        model class), validated: ``choices[0].message.parsed`` is the instance.

        An answer that does not validate (cut by ``max_tokens``, most often) raises
        :class:`StructuredOutputError`, which keeps the text the model produced.
        """
        return send_chat(  # type: ignore[no-any-return]
            self._client,
            parse_call(
                messages,
                params,
                response_format,
                model=model,
                timeout=timeout,
                total_timeout=total_timeout,
                extra_headers=extra_headers,
                extra_body=extra_body,
            ),
        )

    def count_tokens(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        model: str | None = None,
        timeout: TimeoutTypes = None,
    ) -> int:
        """The number of prompt tokens a chat with these ``messages`` (and ``tools``) would
        have: the chat template applied, counted as a generation counts them."""
        fields = prompt_fields(messages, tools, model)
        return self._client.execute_call(
            count_tokens_call("/v1/chat/completions/input_tokens", fields, timeout)
        )


def send_chat(client: Caller, call: Call[Any]) -> Any:
    """Run a chat call. The client's first call with ``tools`` asks the server (``/props``)
    whether its chat template can use them: llama-server drops them silently otherwise."""
    body = call.body
    if not (isinstance(body, dict) and body.get("tools")) or client in _TOOLS_CHECKED:
        return client.execute_call(call)
    return client.run_flow(_tools_checked(client, call))


def _tools_checked(client: Caller, call: Call[Any]) -> Flow[Any]:
    _TOOLS_CHECKED.add(client)
    try:
        props = yield Call("GET", "/props", dict, retries=0, operation="props")
    except APIError:
        props = None  # an older server, a proxy: nothing to say
    caps = props.get("chat_template_caps") if isinstance(props, dict) else None
    if isinstance(caps, dict) and caps.get("supports_tools") is False:
        warnings.warn(
            ToolsIgnoredWarning(
                f"the chat template of the server at {client.base_url} cannot use tools "
                "(/props: chat_template_caps.supports_tools is false): llama-server ignores "
                "them, even with tool_choice='required', and the model answers in text. "
                "Start it with a chat template that supports tools: ServerManager.start(..., "
                "chat_template=...) or llama-server --chat-template-file FILE"
            ),
            stacklevel=4,
        )
    return (yield call)


def parse_call(
    messages: Any,
    params: Mapping[str, Any],
    response_format: Any,
    **options: Any,
) -> Call[Any]:
    """A chat call whose answer is constrained to, and validated against, a model class."""
    if not (isinstance(response_format, type) and issubclass(response_format, BaseModel)):
        raise TypeError(
            "response_format must be a pydantic model class (class City(BaseModel): ...), "
            f"not {response_format!r}; a raw schema goes in create(response_format={{...}})"
        )
    for name in ("response_format", "json_schema", "grammar"):
        if name in params:
            raise TypeError(f"parse() constrains the answer itself: drop {name}=")
    schema = response_format.model_json_schema()
    constrained = {
        **params,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": response_format.__name__, "schema": schema, "strict": True},
        },
    }
    call = chat_call(messages, constrained, stream=False, **options)
    return dataclasses.replace(call, parse=functools.partial(_parsed, response_format))


def _parsed(model: type[M], data: Any) -> ParsedChatCompletion[M]:
    completion: ParsedChatCompletion[M] = ParsedChatCompletion[model].model_validate(  # type: ignore[valid-type]
        data
    )
    for choice in completion.choices:
        content = choice.message.content
        try:
            choice.message.parsed = model.model_validate_json(content or "")
        except ValidationError as exc:
            cut = choice.finish_reason == "length"
            reason = (
                "max_tokens cut the answer before its JSON was complete: raise max_tokens"
                if cut
                else f"it does not validate against {model.__name__}"
            )
            raise StructuredOutputError(
                f"chat.completions.parse: {reason} ({exc.error_count()} errors; the first: "
                f"{exc.errors()[0]['msg']}); the answer began {(content or '')[:200]!r}",
                content=content,
                finish_reason=choice.finish_reason,
                body=data,
            ) from exc
    return completion


def chat_call(
    messages: Any, params: Mapping[str, Any], *, model: str | None = None, **options: Any
) -> Call[Any]:
    """The request of a chat completion: ``params`` are its sampling parameters, ``options``
    the call's (``stream``, ``timeout``, ``total_timeout``, ``extra_headers``, ``extra_body``)."""
    return generation_call(
        "/v1/chat/completions",
        prompt_fields(messages, None, model),
        params,
        parse=ChatCompletion.model_validate,
        stream_format=CHAT_STREAM,
        operation="chat",
        openai=True,
        **options,
    )


class Chat(Resource):
    """``client.chat.completions``: the OpenAI-shaped chat API."""

    __slots__ = ("completions",)

    def __init__(self, client: Caller) -> None:
        super().__init__(client)
        self.completions = ChatCompletions(client)
