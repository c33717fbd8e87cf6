"""``/v1/chat/completions``: ``client.chat.completions.create(...)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

from typing_extensions import Unpack

from .._base import Call
from .._config import TimeoutTypes
from .._streaming import Stream, StreamFormat
from .._types import ChatCompletion, ChatCompletionChunk
from .._validation import check_messages, check_text
from ._params import SamplingParams, generation_call
from ._resource import Resource

__all__ = ["Chat", "ChatCompletions", "CHAT_STREAM"]

CHAT_STREAM = StreamFormat(ChatCompletionChunk.model_validate)


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
        return self._client._execute(  # type: ignore[no-any-return]
            chat_call(
                messages,
                params,
                stream=stream,
                model=model,
                timeout=timeout,
                total_timeout=total_timeout,
                extra_headers=extra_headers,
                extra_body=extra_body,
            )
        )


def chat_call(
    messages: Any, params: Mapping[str, Any], *, model: str | None = None, **options: Any
) -> Call[Any]:
    """The request of a chat completion: ``params`` are its sampling parameters, ``options``
    the call's (``stream``, ``timeout``, ``total_timeout``, ``extra_headers``, ``extra_body``)."""
    fields: dict[str, Any] = {"messages": check_messages(messages)}
    if model is not None:
        fields["model"] = check_text("model", model)
    return generation_call(
        "/v1/chat/completions",
        fields,
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

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.completions = ChatCompletions(client)
