"""The llama.cpp calls that sit on the client itself (``client.tokenize(...)`` and friends).

Written once for both clients: each method validates, describes the call and hands it to
the client's ``execute_call``, which the sync client runs at once and the async one awaits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from typing_extensions import Unpack

from ._config import TimeoutTypes
from ._types import ChatCompletion, ChatCompletionChunk, NativeCompletion
from .resources._params import SamplingParams
from .resources.chat import chat_call, send_chat
from .resources.completions import complete_call, infill_call
from .resources.embeddings import embed_flow
from .resources.rerank import rerank_call
from .resources.tokens import apply_template_call, detokenize_call, tokenize_call

if TYPE_CHECKING:
    from ._base_client import BaseClient
    from ._typed_streams import Stream

    _Base = BaseClient
else:
    _Base = object

__all__ = ["ConvenienceMixin"]


class ConvenienceMixin(_Base):
    @overload
    def chat_completion(
        self,
        *,
        messages: Sequence[Mapping[str, Any]],
        stream: Literal[False] = False,
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> ChatCompletion: ...
    @overload
    def chat_completion(
        self,
        *,
        messages: Sequence[Mapping[str, Any]],
        stream: Literal[True],
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> Stream[ChatCompletionChunk]: ...
    @overload
    def chat_completion(
        self,
        *,
        messages: Sequence[Mapping[str, Any]],
        stream: bool,
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> ChatCompletion | Stream[ChatCompletionChunk]: ...
    def chat_completion(
        self,
        *,
        messages: Sequence[Mapping[str, Any]],
        stream: bool = False,
        model: str | None = None,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """``chat.completions.create`` by keywords only (the spec's singular form)."""
        return send_chat(  # type: ignore[no-any-return]
            self,
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

    @overload
    def embed(self, text: str) -> list[float]: ...  # type: ignore[overload-overlap]
    @overload
    def embed(self, text: Sequence[str]) -> list[list[float]]: ...
    def embed(self, text: str | Sequence[str]) -> list[float] | list[list[float]]:
        """The embedding vector of ``text`` as a flat list (a list of them for a list of texts)."""
        return self.run_flow(embed_flow(text))  # type: ignore[no-any-return]

    def tokenize(
        self,
        text: str,
        add_special: bool = True,
        with_pieces: bool = False,
        *,
        parse_special: bool = True,
    ) -> list[Any]:
        """Token ids of ``text`` (with BOS when ``add_special``); with ``with_pieces``, dicts
        ``{"id": ..., "piece": ...}`` instead."""
        return self.execute_call(
            tokenize_call(
                text, add_special=add_special, parse_special=parse_special, with_pieces=with_pieces
            )
        )

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of token ``ids``."""
        return self.execute_call(detokenize_call(ids))

    def apply_template(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt the model's chat template makes of ``messages``."""
        return self.execute_call(apply_template_call(messages))

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        return_documents: bool = False,
    ) -> list[dict[str, Any]]:
        """Documents by relevance to ``query``, best first (needs ``--reranking``)."""
        return self.execute_call(
            rerank_call(query, documents, top_n=top_n, return_documents=return_documents)
        )

    @overload
    def complete(
        self,
        prompt: str | Sequence[Any],
        *,
        stream: Literal[False] = False,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> NativeCompletion: ...
    @overload
    def complete(
        self,
        prompt: str | Sequence[Any],
        *,
        stream: Literal[True],
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> Stream[NativeCompletion]: ...
    @overload
    def complete(
        self,
        prompt: str | Sequence[Any],
        *,
        stream: bool,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> NativeCompletion | Stream[NativeCompletion]: ...
    def complete(
        self,
        prompt: str | Sequence[Any],
        *,
        stream: bool = False,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> NativeCompletion | Stream[NativeCompletion]:
        """llama.cpp's native ``/completion``: ``.content``, ``.tokens_predicted``, ``.timings``."""
        return self.execute_call(  # type: ignore[no-any-return]
            complete_call(
                prompt,
                params,
                stream=stream,
                timeout=timeout,
                total_timeout=total_timeout,
                extra_body=extra_body,
            )
        )

    @overload
    def infill(
        self,
        input_prefix: str,
        input_suffix: str = "",
        *,
        input_extra: Sequence[Mapping[str, str]] | None = None,
        prompt: str = "",
        stream: Literal[False] = False,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> NativeCompletion: ...
    @overload
    def infill(
        self,
        input_prefix: str,
        input_suffix: str = "",
        *,
        input_extra: Sequence[Mapping[str, str]] | None = None,
        prompt: str = "",
        stream: Literal[True],
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> Stream[NativeCompletion]: ...
    @overload
    def infill(
        self,
        input_prefix: str,
        input_suffix: str = "",
        *,
        input_extra: Sequence[Mapping[str, str]] | None = None,
        prompt: str = "",
        stream: bool,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> NativeCompletion | Stream[NativeCompletion]: ...
    def infill(
        self,
        input_prefix: str,
        input_suffix: str = "",
        *,
        input_extra: Sequence[Mapping[str, str]] | None = None,
        prompt: str = "",
        stream: bool = False,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[SamplingParams],
    ) -> NativeCompletion | Stream[NativeCompletion]:
        """Fill in the middle between ``input_prefix`` and ``input_suffix`` (code models
        with FIM tokens); ``input_extra`` adds context files."""
        return self.execute_call(  # type: ignore[no-any-return]
            infill_call(
                input_prefix,
                input_suffix,
                params,
                input_extra=input_extra,
                prompt=prompt,
                stream=stream,
                timeout=timeout,
                total_timeout=total_timeout,
                extra_body=extra_body,
            )
        )
