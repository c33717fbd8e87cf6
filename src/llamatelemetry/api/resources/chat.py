"""``/v1/chat/completions``: ``client.chat.completions.create(...)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

from .._base import Call, TimeoutTypes
from .._streaming import Stream, StreamFormat
from .._types import ChatCompletion, ChatCompletionChunk
from .._validation import check_messages, check_text
from ._params import generation_call
from ._resource import Resource

__all__ = ["Chat", "ChatCompletions", "CHAT_STREAM"]

CHAT_STREAM = StreamFormat(ChatCompletionChunk.model_validate)


class ChatCompletions(Resource):
    __slots__ = ()

    @overload
    def create(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        top_k: int | None = ...,
        stream: Literal[False] = ...,
        seed: int | None = ...,
        stop: str | Sequence[str] | None = ...,
        frequency_penalty: float | None = ...,
        presence_penalty: float | None = ...,
        *,
        model: str | None = ...,
        timeout: TimeoutTypes = ...,
        total_timeout: float | None = ...,
        extra_headers: Mapping[str, str] | None = ...,
        **extra: Any,
    ) -> ChatCompletion: ...
    @overload
    def create(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        top_k: int | None = ...,
        *,
        stream: Literal[True],
        seed: int | None = ...,
        stop: str | Sequence[str] | None = ...,
        frequency_penalty: float | None = ...,
        presence_penalty: float | None = ...,
        model: str | None = ...,
        timeout: TimeoutTypes = ...,
        total_timeout: float | None = ...,
        extra_headers: Mapping[str, str] | None = ...,
        **extra: Any,
    ) -> Stream[ChatCompletionChunk]: ...
    @overload
    def create(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        top_k: int | None = ...,
        *,
        stream: bool,
        seed: int | None = ...,
        stop: str | Sequence[str] | None = ...,
        frequency_penalty: float | None = ...,
        presence_penalty: float | None = ...,
        model: str | None = ...,
        timeout: TimeoutTypes = ...,
        total_timeout: float | None = ...,
        extra_headers: Mapping[str, str] | None = ...,
        **extra: Any,
    ) -> ChatCompletion | Stream[ChatCompletionChunk]: ...
    def create(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int | None = 128,
        temperature: float | None = 0.7,
        top_p: float | None = 0.9,
        top_k: int | None = 40,
        stream: bool = False,
        seed: int | None = 0,
        stop: str | Sequence[str] | None = None,
        frequency_penalty: float | None = 0.0,
        presence_penalty: float | None = 0.0,
        *,
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """Generate the assistant's reply to ``messages``.

        Any other llama.cpp parameter (``min_p``, ``repeat_penalty``, ``grammar``,
        ``json_schema``, ``response_format``, ``logit_bias``, ``n_probs``, ``cache_prompt``,
        ``tools``, ...) passes through as a keyword. With ``stream=True`` the result is a
        :class:`Stream` of chunks whose last one carries ``usage`` and ``timings``.
        ``timeout`` bounds each wait on the socket; ``total_timeout`` the whole call, its
        retries and, for a stream, the reading of every chunk (see the client's options).
        """
        return self._client._execute(  # type: ignore[no-any-return]
            chat_call(
                messages,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                stream=stream,
                seed=seed,
                stop=stop,
                frequency_penalty=frequency_penalty,
                presence_penalty=presence_penalty,
                model=model,
                timeout=timeout,
                total_timeout=total_timeout,
                extra_headers=extra_headers,
                extra=extra,
            )
        )


def chat_call(messages: Any, *, model: str | None, **kwargs: Any) -> Call[Any]:
    fields: dict[str, Any] = {"messages": check_messages(messages)}
    if model is not None:
        fields["model"] = check_text("model", model)
    return generation_call(
        "/v1/chat/completions",
        fields,
        parse=ChatCompletion.model_validate,
        stream_format=CHAT_STREAM,
        operation="chat",
        openai=True,
        **kwargs,
    )


class Chat(Resource):
    """``client.chat.completions``: the OpenAI-shaped chat API."""

    __slots__ = ("completions",)

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.completions = ChatCompletions(client)
