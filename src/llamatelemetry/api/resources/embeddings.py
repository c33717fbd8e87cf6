"""``/v1/embeddings``: ``client.embeddings.create(...)`` and ``client.embed(...)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from .._calls_and_callers import Call, Flow
from .._config import TimeoutTypes, check_total_timeout
from .._types import EmbeddingsResponse
from .._validation import check_text, check_texts, check_token_ids
from ._params import check_extra
from ._resource import Resource

__all__ = ["Embeddings", "embeddings_call", "embed_flow"]


def _check_input(value: Any) -> Any:
    if isinstance(value, str):
        return check_text("input", value)
    if (
        isinstance(value, Sequence)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return check_token_ids("input", value)
    if (
        isinstance(value, Sequence)
        and value
        and all(isinstance(v, Sequence) and not isinstance(v, (str, bytes)) for v in value)
    ):
        return [check_token_ids(f"input[{i}]", ids) for i, ids in enumerate(value)]
    return check_texts("input", value)


def embeddings_call(
    input: Any,
    *,
    model: str | None,
    encoding_format: str,
    timeout: TimeoutTypes,
    extra: dict[str, Any],
    total_timeout: float | None = None,
) -> Call[EmbeddingsResponse]:
    if not isinstance(encoding_format, str):
        raise TypeError(
            f"encoding_format must be 'float' or 'base64', not {type(encoding_format).__name__}"
        )
    if encoding_format not in ("float", "base64"):
        raise ValueError(f"encoding_format must be 'float' or 'base64', got {encoding_format!r}")
    body: dict[str, Any] = {"input": _check_input(input), "encoding_format": encoding_format}
    if model is not None:
        body["model"] = check_text("model", model)
    body.update(check_extra(extra))
    return Call(
        "POST",
        "/v1/embeddings",
        EmbeddingsResponse.model_validate,
        body=body,
        timeout=timeout,
        total_timeout=check_total_timeout(total_timeout),
        operation="embeddings",
    )


def embed_flow(text: Any) -> Flow[Any]:
    """One text → one flat vector; a list of texts → one vector each, in input order.

    A flow rather than a call that parses to vectors: the call's own result is the whole
    response, so telemetry sees its usage. ``text`` is checked now, before any send.
    """
    single = isinstance(text, str)
    if single:
        check_text("text", text)
    else:
        check_texts("text", text)
    call = Call(
        "POST",
        "/v1/embeddings",
        EmbeddingsResponse.model_validate,
        body={"input": text, "encoding_format": "float"},
        operation="embeddings",
    )
    return _vectors(call, single)


def _vectors(call: Call[EmbeddingsResponse], single: bool) -> Flow[Any]:
    response = yield call
    vectors = [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
    return vectors[0] if single else vectors


class Embeddings(Resource):
    __slots__ = ()

    def create(
        self,
        input: str | Sequence[str] | Sequence[int],
        model: str | None = None,
        encoding_format: Literal["float", "base64"] = "float",
        *,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        **extra: Any,
    ) -> EmbeddingsResponse:
        """Embed one text or many; ``.data[i].embedding`` is the vector of ``input[i]``.

        The server needs ``--embedding`` (else :class:`NotSupportedError` names the flag).
        """
        return self._client.execute_call(
            embeddings_call(
                input,
                model=model,
                encoding_format=encoding_format,
                timeout=timeout,
                extra=extra,
                total_timeout=total_timeout,
            )
        )
