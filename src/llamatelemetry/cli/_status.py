"""``llamatelemetry status`` and ``llamatelemetry models``: what a running server is doing."""

from __future__ import annotations

from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..api import BadRequestError, LlamaCppClient, NotSupportedError
from ._client import client_command
from ._output import json_option, out_console, print_json
from ._user_errors import disabled_reason

__all__ = ["models", "status"]

#: The counters and gauges ``status`` shows, with the words it shows them with.
KEY_METRICS = {
    "llamacpp:prompt_tokens_total": "prompt tokens processed",
    "llamacpp:tokens_predicted_total": "tokens generated",
    "llamacpp:prompt_tokens_seconds": "prompt tokens/s (average)",
    "llamacpp:predicted_tokens_seconds": "generated tokens/s (average)",
    "llamacpp:n_decode_total": "llama_decode calls",
    "llamacpp:requests_processing": "requests processing",
    "llamacpp:requests_deferred": "requests deferred",
}
_META = ("n_ctx", "n_ctx_train", "n_embd", "n_vocab", "n_params", "size")


def _count(value: Any) -> str:
    """1024 → "1,024"; None → ""."""
    if isinstance(value, (int, float)):
        return f"{value:,.1f}" if value % 1 else f"{value:,.0f}"
    return "" if value is None else str(value)


def _size(value: Any, unit: str = "") -> str:
    """4178240 → "4.2M": for counts so large that their digits say nothing."""
    if not isinstance(value, (int, float)):
        return _count(value)
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f} {suffix}{unit}"
    return f"{value:g} {unit}".rstrip()


def _meta_value(key: str, value: Any) -> str:
    if key == "size":
        return _size(value, "B")
    return _size(value) if key == "n_params" else _count(value)


def _model_summary(model: dict[str, Any]) -> dict[str, Any]:
    meta = model.get("meta") or {}
    summary = {"id": model.get("id"), **{key: meta.get(key) for key in _META}}
    status = model.get("status")
    if isinstance(status, dict):  # a router's model: unloaded, loading, loaded, sleeping
        summary["status"] = status.get("value")
    return summary


def _optional(fetch: Any, *args: Any) -> tuple[Any, str | None]:
    """``fetch()``'s result, or None and why: the server was started without it (501), or
    a router's model is not loaded (400)."""
    try:
        return fetch(*args), None
    except NotSupportedError as exc:
        return None, disabled_reason(exc)
    except BadRequestError as exc:
        return None, exc.message


def _collect(client: LlamaCppClient, model: str | None) -> dict[str, Any]:
    health = client.health.check()
    state: dict[str, Any] = {"url": client.base_url, "health": health}
    if health.get("status") != "ok":
        return state  # loading: the other endpoints would only answer 503
    state["models"] = [_model_summary(m) for m in client.models.list()]
    props, _ = _optional(client.props.get)
    if model is None and isinstance(props, dict) and props.get("role") == "router":
        # A router has no slots or metrics of its own: each of its models has.
        why = "a router: its models have them, see --model NAME"
        state.update(slots=None, slots_disabled=why, metrics=None, metrics_disabled=why)
        return state
    if model is not None:
        state["model"] = model
    slots, slots_disabled = _optional(client.slots.list, model)
    state["slots"] = (
        None if slots is None
        else [{"id": s.get("id"), "state": s.get("state"), "n_ctx": s.get("n_ctx")} for s in slots]
    )  # fmt: skip
    state["slots_disabled"] = slots_disabled
    values, metrics_disabled = _optional(client.metrics.values, model)
    state["metrics"] = (
        None if values is None else {k: v for k, v in values.items() if k.startswith("llamacpp:")}
    )
    state["metrics_disabled"] = metrics_disabled
    return state


def _overview(state: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    status = str(state["health"].get("status"))
    table.add_row("Server", Text(state["url"], style="cyan"))
    table.add_row("Health", Text(status, style="green" if status == "ok" else "yellow"))
    for model in state.get("models", []):
        status = f"  ({model['status']})" if "status" in model else ""
        table.add_row("Model", str(model["id"]) + status)
        for keys in (_META[:3], _META[3:]):  # context and width; vocabulary and size
            facts = [
                f"{key} {_meta_value(key, model[key])}" for key in keys if model[key] is not None
            ]
            table.add_row("", Text(" · ".join(facts), style="dim"))
    return table


def _slots_table(slots: list[dict[str, Any]]) -> Table:
    busy = sum(s["state"] != "idle" for s in slots)
    table = Table(title=f"Slots ({busy} of {len(slots)} busy)", box=box.SIMPLE_HEAD,
                  title_justify="left")  # fmt: skip
    table.add_column("Slot", justify="right")
    table.add_column("State")
    table.add_column("Context", justify="right")
    for slot in slots:
        colour = "green" if slot["state"] == "idle" else "yellow"
        table.add_row(
            str(slot["id"]), Text(str(slot["state"]), style=colour), _count(slot["n_ctx"])
        )
    return table


def _metrics_table(metrics: dict[str, float]) -> Table:
    table = Table(title="Metrics", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    for name, label in KEY_METRICS.items():
        if name in metrics:
            table.add_row(label, _count(metrics[name]))
    return table


def _disabled(console: Console, what: str, reason: str) -> None:
    console.print(Text.assemble((f"{what}: ", "bold"), (f"disabled ({reason})", "yellow")))


def _print_status(console: Console, state: dict[str, Any]) -> None:
    console.print(_overview(state))
    if "models" not in state:
        console.print(Text("The server is not ready yet; try again in a moment.", style="yellow"))
        return
    console.print()
    if state["slots"] is not None:
        console.print(_slots_table(state["slots"]))
    else:
        _disabled(console, "Slots", state["slots_disabled"])
    if state["metrics"] is not None:
        console.print(_metrics_table(state["metrics"]))
    else:
        _disabled(console, "Metrics", state["metrics_disabled"])


@click.command()
@click.option("--model", help="A router's model: its slots and metrics (never loads it).")
@json_option
@client_command
def status(client: LlamaCppClient, model: str | None, as_json: bool) -> None:
    """Health, model, slots and key metrics of a running llama-server."""
    state = _collect(client, model)
    if as_json:
        print_json(state)
    else:
        _print_status(out_console(), state)


@click.command()
@json_option
@client_command
def models(client: LlamaCppClient, as_json: bool) -> None:
    """The models a running llama-server has loaded."""
    listed = client.models.list()
    if as_json:
        print_json(listed)
        return
    summaries = [_model_summary(m) for m in listed]
    router = any("status" in m for m in summaries)  # a router lists its models' states
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("Model", overflow="fold")
    if router:
        table.add_column("Status")
    for key in _META:
        table.add_column(key, justify="right", no_wrap=True)
    for model in summaries:
        state = [str(model.get("status"))] if router else []
        table.add_row(str(model["id"]), *state, *(_meta_value(key, model[key]) for key in _META))
    out_console().print(table)
