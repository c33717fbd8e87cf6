"""The demo's spans as a rich tree: the root, then each call span with its key attributes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from ._telemetry import SpanInfo

__all__ = ["print_span_tree", "span_tree"]


def _display_name(span: SpanInfo) -> str:
    """The span's name, with a model given as a file path shortened to the file's name."""
    model = span.attributes.get("gen_ai.request.model")
    if isinstance(model, str) and "/" in model and model in span.name:
        return span.name.replace(model, PurePath(model).name)
    return span.name


def _facts(attributes: dict[str, Any]) -> list[str]:
    """The attributes worth a glance: tokens, finish reasons, time to first chunk, speed."""
    facts = []
    tokens_in = attributes.get("gen_ai.usage.input_tokens")
    tokens_out = attributes.get("gen_ai.usage.output_tokens")
    if tokens_in is not None and tokens_out is not None:
        facts.append(f"{tokens_in}→{tokens_out} tokens")
    elif tokens_in is not None:
        facts.append(f"{tokens_in} input tokens")
    reasons = attributes.get("gen_ai.response.finish_reasons")
    if reasons:
        facts.append("finish " + ",".join(map(str, reasons)))
    first = attributes.get("gen_ai.response.time_to_first_chunk")
    if isinstance(first, (int, float)):
        facts.append(f"TTFT {first * 1000:,.1f} ms")
    speed = attributes.get("llama_cpp.timings.predicted_per_second")
    if isinstance(speed, (int, float)):
        facts.append(f"{speed:,.0f} tok/s")
    return facts


def _label(span: SpanInfo) -> Text:
    """Name, duration and the demo call that made the span; below, its key attributes."""
    label = Text.assemble((_display_name(span), "bold"), f"  {span.duration_ms:,.1f} ms")
    if span.operation and span.operation != span.name:
        label.append(f"  {span.operation}", style="cyan")
    facts = _facts(span.attributes)
    if facts:
        label.append("\n" + " · ".join(facts), style="dim")
    if span.status == "error":
        label.append(f"\n✗ {span.status_message or 'error'}", style="red")
    return label


def span_tree(spans: Sequence[SpanInfo]) -> Tree:
    """Each span under its parent; spans whose parent is not in ``spans`` at the top."""
    ids = {span.span_id for span in spans}
    tops = [s for s in spans if s.parent_id not in ids]
    tree = Tree(Text("OpenTelemetry spans", style="bold"), guide_style="dim")
    nodes = {}
    for span in tops:
        children = sum(s.parent_id == span.span_id for s in spans)
        label = _label(span)
        if children:
            label.append(f"  ({children} call spans)", style="dim")
        nodes[span.span_id] = tree.add(label)
    for span in spans:
        if span.parent_id in nodes:
            nodes[span.span_id] = nodes[span.parent_id].add(_label(span))
    return tree


def print_span_tree(console: Console, spans: Sequence[SpanInfo], note: str) -> None:
    """The tree, or the note on why telemetry is off."""
    console.print()
    if not spans:
        console.print(Text(note + ".", style="yellow"), soft_wrap=True)
        return
    console.print(span_tree(spans))
