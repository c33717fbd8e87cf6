"""The llama.cpp calls that sit on the client itself (``client.tokenize(...)`` and friends).

Written once for both clients: each method validates, describes the call and hands it to
the client's ``_execute``, which the sync client runs at once and the async one awaits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from ._base import TimeoutTypes
from ._types import ChatCompletion, ChatCompletionChunk, NativeCompletion
from .resources.completions import complete_call, infill_call
from .resources.embeddings import embed_flow
from .resources.rerank import rerank_call
from .resources.tokens import apply_template_call, detokenize_call, tokenize_call

if TYPE_CHECKING:
    from ._base import BaseClient
    from ._streaming import Stream

    _Base = BaseClient
else:
    _Base = object

__all__ = ["ConvenienceMixin"]


class ConvenienceMixin(_Base):
    @overload
    def chat_completion(self, *, stream: Literal[False] = ..., **kwargs: Any) -> ChatCompletion: ...
    @overload
    def chat_completion(
        self, *, stream: Literal[True], **kwargs: Any
    ) -> Stream[ChatCompletionChunk]: ...
    @overload
    def chat_completion(
        self, *, stream: bool, **kwargs: Any
    ) -> ChatCompletion | Stream[ChatCompletionChunk]: ...
    def chat_completion(self, **kwargs: Any) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """``chat.completions.create`` by keywords only (the spec's singular form)."""
        return self.chat.completions.create(**kwargs)  # type: ignore[no-any-return]

    @overload
    def embed(self, text: str) -> list[float]: ...  # type: ignore[overload-overlap]
    @overload
    def embed(self, text: Sequence[str]) -> list[list[float]]: ...
    def embed(self, text: str | Sequence[str]) -> list[float] | list[list[float]]:
        """The embedding vector of ``text`` as a flat list (a list of them for a list of texts)."""
        return self._run(embed_flow(text))  # type: ignore[no-any-return]

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
        return self._execute(
            tokenize_call(
                text, add_special=add_special, parse_special=parse_special, with_pieces=with_pieces
            )
        )

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of token ``ids``."""
        return self._execute(detokenize_call(ids))

    def apply_template(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt the model's chat template makes of ``messages``."""
        return self._execute(apply_template_call(messages))

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        return_documents: bool = False,
    ) -> list[dict[str, Any]]:
        """Documents by relevance to ``query``, best first (needs ``--reranking``)."""
        return self._execute(
            rerank_call(query, documents, top_n=top_n, return_documents=return_documents)
        )

    def complete(
        self,
        prompt: str | Sequence[Any],
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
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        **extra: Any,
    ) -> NativeCompletion | Stream[NativeCompletion]:
        """llama.cpp's native ``/completion``: ``.content``, ``.tokens_predicted``, ``.timings``."""
        return self._execute(  # type: ignore[no-any-return]
            complete_call(
                prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                stream=stream,
                seed=seed,
                stop=stop,
                frequency_penalty=frequency_penalty,
                presence_penalty=presence_penalty,
                timeout=timeout,
                total_timeout=total_timeout,
                extra=extra,
            )
        )

    def infill(
        self,
        input_prefix: str,
        input_suffix: str = "",
        *,
        input_extra: Sequence[Mapping[str, str]] | None = None,
        prompt: str = "",
        max_tokens: int | None = 128,
        temperature: float | None = 0.7,
        top_p: float | None = 0.9,
        top_k: int | None = 40,
        stream: bool = False,
        seed: int | None = 0,
        stop: str | Sequence[str] | None = None,
        frequency_penalty: float | None = 0.0,
        presence_penalty: float | None = 0.0,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        **extra: Any,
    ) -> NativeCompletion | Stream[NativeCompletion]:
        """Fill in the middle between ``input_prefix`` and ``input_suffix`` (code models
        with FIM tokens); ``input_extra`` adds context files."""
        return self._execute(  # type: ignore[no-any-return]
            infill_call(
                input_prefix,
                input_suffix,
                input_extra=input_extra,
                prompt=prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                stream=stream,
                seed=seed,
                stop=stop,
                frequency_penalty=frequency_penalty,
                presence_penalty=presence_penalty,
                timeout=timeout,
                total_timeout=total_timeout,
                extra=extra,
            )
        )
