"""``tokenize``, ``embed`` and ``rerank``: the model's text tools, no generation."""

from __future__ import annotations

from typing import Any, cast

import click
from rich import box
from rich.table import Table
from rich.text import Text

from ..api import LlamaCppClient
from ._client import client_command
from ._output import json_option, out_console, print_json, working

__all__ = ["embed", "rerank", "tokenize"]

SHOWN_VALUES = 6


def _piece(piece: Any) -> str:
    """A token's text, quoted so that spaces show; bytes that are not UTF-8 as a byte list."""
    return repr(piece) if isinstance(piece, str) else f"bytes {piece}"


@click.command()
@click.argument("text")
@click.option("--pieces", is_flag=True, help="Show each token's text next to its id.")
@click.option("--no-special", is_flag=True, help="Do not add special tokens (BOS).")
@json_option
@client_command
def tokenize(
    client: LlamaCppClient, text: str, pieces: bool, no_special: bool, as_json: bool
) -> None:
    """The model's token ids for TEXT."""
    tokens = client.tokenize(text, add_special=not no_special, with_pieces=pieces)
    if as_json:
        print_json(tokens)
        return
    console = out_console()
    if not pieces:
        console.print(str(tokens), soft_wrap=True)
        console.print(Text(f"{len(tokens)} tokens", style="dim"))
        return
    table = Table(box=box.SIMPLE_HEAD, caption=f"{len(tokens)} tokens")
    table.add_column("Id", justify="right")
    table.add_column("Piece")
    for token in tokens:
        table.add_row(str(token["id"]), _piece(token["piece"]))
    console.print(table)


@click.command()
@click.argument("texts", metavar="TEXT...", nargs=-1, required=True)
@json_option
@client_command
def embed(client: LlamaCppClient, texts: tuple[str, ...], as_json: bool) -> None:
    """Embedding vectors of one or more TEXTs (the server needs --embedding).

    Shows each vector's size and first values; --json prints the full vectors.
    """
    with working(f"Embedding {len(texts)} text(s)…"):
        response = client.embeddings.create(input=list(texts))
    ordered = sorted(response.data, key=lambda d: d.index)
    vectors = [cast(list[float], item.embedding) for item in ordered]  # floats: the default
    if as_json:
        print_json({
            "model": response.model,
            "dims": len(vectors[0]) if vectors else 0,
            "data": [{"text": t, "embedding": v} for t, v in zip(texts, vectors, strict=True)],
            "usage": response.usage.to_dict() if response.usage else None,
        })  # fmt: skip
        return
    console = out_console()
    for text, vector in zip(texts, vectors, strict=True):
        head = ", ".join(f"{x:+.4f}" for x in vector[:SHOWN_VALUES])
        more = ", …" if len(vector) > SHOWN_VALUES else ""
        console.print(Text.assemble((f"{text!r}", "bold"), f"  {len(vector)} dims"))
        console.print(Text(f"  [{head}{more}]", style="dim"))


@click.command()
@click.argument("query")
@click.argument("documents", metavar="DOC...", nargs=-1, required=True)
@click.option("--top-n", type=click.IntRange(min=1), help="Show only the best N documents.")
@json_option
@client_command
def rerank(
    client: LlamaCppClient,
    query: str,
    documents: tuple[str, ...],
    top_n: int | None,
    as_json: bool,
) -> None:
    """Order DOCs by relevance to QUERY, best first (the server needs --reranking)."""
    with working(f"Ranking {len(documents)} documents…"):
        results = client.rerank(query, list(documents), top_n=top_n)
    ranked = [
        {"index": r["index"], "score": r["score"], "document": documents[r["index"]]}
        for r in results
    ]
    if as_json:
        print_json(ranked)
        return
    table = Table(box=box.SIMPLE_HEAD, title=Text(query, style="bold"), title_justify="left")
    table.add_column("Rank", justify="right")
    table.add_column("Score", justify="right")
    table.add_column("Doc", justify="right")
    table.add_column("Document")
    for rank, result in enumerate(ranked, start=1):
        table.add_row(str(rank), f"{result['score']:.4f}", str(result["index"]), result["document"])
    out_console().print(table)
