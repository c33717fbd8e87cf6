"""Retrieval in two stages: embed a corpus in batches, find candidates by cosine
similarity, then rerank them with a reranking model.

    LLAMA_BASE_URL=http://127.0.0.1:8080 LLAMA_RERANK_URL=http://127.0.0.1:8081 \
        python examples/embeddings_rerank_pipeline.py

LLAMA_BASE_URL is a server started with ``--embedding --pooling mean`` (an embedding
model), LLAMA_RERANK_URL one started with ``--reranking`` (a reranker). Batches are embedded
concurrently with the async client. Without LLAMA_BASE_URL, both servers are started on
the built-in tiny model for the run (the ``server`` extra); its random weights rank at
random, but every step is real. Without LLAMA_RERANK_URL (and with LLAMA_BASE_URL), the
rerank stage is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tempfile
from collections.abc import Iterator, Sequence

from llamatelemetry.api import AsyncLlamaCppClient, LlamaCppClient

CORPUS = [
    "llama.cpp runs large language models on CPUs and GPUs in plain C/C++.",
    "GGUF is the file format llama.cpp uses for model weights and metadata.",
    "Quantization stores weights in fewer bits to save memory and bandwidth.",
    "A KV cache keeps attention keys and values so earlier tokens are not recomputed.",
    "OpenTelemetry is a vendor-neutral standard for traces, metrics and logs.",
    "Prometheus scrapes metrics over HTTP and stores them as time series.",
    "Jaeger and Grafana Tempo store and display distributed traces.",
    "Reranking models score how relevant a document is to a query.",
    "Flash attention computes attention in tiles to save memory.",
    "A load balancer spreads requests across several servers.",
]
QUERY = "How does llama.cpp avoid recomputing attention for earlier tokens?"
BATCH_SIZE = 4
CANDIDATES = 5


@contextlib.contextmanager
def llama_server_urls() -> Iterator[tuple[str, str | None]]:
    """($LLAMA_BASE_URL, $LLAMA_RERANK_URL), or two tiny-model servers for this run."""
    url = os.environ.get("LLAMA_BASE_URL")
    if url:
        yield url, os.environ.get("LLAMA_RERANK_URL") or None
        return
    from llamatelemetry.testing import start_chat_server, start_rerank_server

    with (
        tempfile.TemporaryDirectory() as tmp,
        start_chat_server(f"{tmp}/embed") as embedder,
        start_rerank_server(f"{tmp}/rerank") as reranker,
    ):
        print(
            f"(no LLAMA_BASE_URL: serving the built-in tiny model at {embedder.url} "
            f"and {reranker.url})"
        )
        yield embedder.url, reranker.url


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def embed_corpus(url: str, texts: list[str]) -> list[list[float]]:
    """Embed ``texts`` in batches, the batches concurrently (the server's slots run them)."""
    batches = [texts[i : i + BATCH_SIZE] for i in range(0, len(texts), BATCH_SIZE)]
    async with AsyncLlamaCppClient(base_url=url) as client:
        responses = await asyncio.gather(*(client.embeddings.create(input=b) for b in batches))
    vectors = []
    for response in responses:  # in batch order; within a batch, by index
        vectors += [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
    return vectors


def main() -> None:
    with llama_server_urls() as (url, rerank_url):
        vectors = asyncio.run(embed_corpus(url, CORPUS))
        print(
            f"embedded {len(vectors)} documents in batches of {BATCH_SIZE} "
            f"({len(vectors[0])} dimensions)"
        )

        with LlamaCppClient(base_url=url) as client:
            query_vector = client.embed(QUERY)
        ranked = sorted(
            range(len(CORPUS)), key=lambda i: cosine(query_vector, vectors[i]), reverse=True
        )
        candidates = ranked[:CANDIDATES]
        print(f"query: {QUERY}")
        print(f"stage 1, cosine similarity: top {CANDIDATES} of {len(CORPUS)}")
        for rank, i in enumerate(candidates, 1):
            print(f"  {rank}. [{i}] {cosine(query_vector, vectors[i]):.6f}  {CORPUS[i]}")

        if rerank_url is None:
            print("stage 2 skipped: set LLAMA_RERANK_URL to a server started with --reranking")
            return
        with LlamaCppClient(base_url=rerank_url) as reranker:
            results = reranker.rerank(QUERY, [CORPUS[i] for i in candidates], top_n=3)
        print("stage 2, reranked: best 3")
        for rank, result in enumerate(results, 1):
            i = candidates[result["index"]]
            print(f"  {rank}. [{i}] {result['score']:.4f}  {CORPUS[i]}")


if __name__ == "__main__":
    main()
