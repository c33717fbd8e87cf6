"""``/v1/rerank``: order documents by relevance to a query."""

from __future__ import annotations

from typing import Any

from .._calls_and_callers import Call
from .._validation import check_bool, check_int, check_text, check_texts

__all__ = ["rerank_call"]


def rerank_call(
    query: Any, documents: Any, *, top_n: Any, return_documents: bool
) -> Call[list[dict[str, Any]]]:
    """Results are dicts sorted by score, best first: ``index`` (into ``documents``),
    ``score`` and ``relevance_score`` (the same number; the latter is the server's name),
    and ``document`` when ``return_documents`` is true."""
    check_text("query", query)
    docs = check_texts("documents", documents, allow_empty_items=True)
    check_int("top_n", top_n, minimum=1)
    check_bool("return_documents", return_documents)
    body: dict[str, Any] = {"query": query, "documents": docs}
    if top_n is not None:
        body["top_n"] = top_n

    def parse(data: Any) -> list[dict[str, Any]]:
        raw = data["results"] if isinstance(data, dict) else data
        results = []
        for item in raw:
            result = dict(item)
            index = result["index"]
            if not isinstance(index, int) or not 0 <= index < len(docs):
                raise ValueError(f"result index {index!r} is outside the {len(docs)} documents")
            score = float(
                result["relevance_score"] if "relevance_score" in result else result["score"]
            )
            result["score"] = result["relevance_score"] = score
            if return_documents:
                result["document"] = docs[index]
            results.append(result)
        results.sort(key=lambda r: r["score"], reverse=True)
        return results[:top_n] if top_n is not None else results

    return Call("POST", "/v1/rerank", parse, body=body, operation="rerank")
