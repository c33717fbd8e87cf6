"""How the commands look: the demo's rich output for people and its JSON document for
machines, and the result tables of ``llamatelemetry bench``."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .._version import __version__
from ..bench import (
    GENERATING,
    ITL_NOTE,
    METRIC_TITLES,
    METRICS,
    SLO,
    TPOT_NOTE,
    BenchReport,
    Change,
    RunResult,
    capacity_bounded,
    percentile_name,
)
from ._calls import CallRecord
from ._servers import DemoServers
from ._steps import Step
from ._telemetry import DemoTelemetry, SpanInfo

__all__ = [
    "RANDOM_WEIGHTS_NOTICE",
    "StreamPrinter",
    "call_status",
    "print_bench",
    "print_call",
    "print_footer",
    "print_header",
    "print_servers",
    "print_summary",
    "summary_json",
]

RANDOM_WEIGHTS_NOTICE = (
    "Note: the built-in demo model has RANDOM weights, so its text is gibberish.\n"
    "It is tiny so that every API call runs offline, on a CPU, in seconds.\n"
    "For real answers, run it on a real small model (a 98 MB download, once) or your own:\n"
    "    llamatelemetry demo --real-model\n"
    "    llamatelemetry demo --model path/to/model.gguf"
)
_MARKS = {"ok": ("✓", "green"), "skipped": ("–", "yellow"), "error": ("✗", "red")}


def _ms(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def print_header(
    console: Console, builtin: bool, model: Path | None, telemetry: DemoTelemetry
) -> None:
    """Title line, whether telemetry is on, and the random-weights notice (built-in model)."""
    console.print(Text.assemble(("llamatelemetry demo", "bold"), f"  v{__version__}"))
    console.print("Starts real llama.cpp servers and calls every LlamaCppClient API on them.")
    if telemetry.enabled:
        console.print(Text(f"Telemetry on: one span per call ({telemetry.note}).", style="dim"))
    else:
        console.print(Text(telemetry.note + ".", style="yellow"), soft_wrap=True)
    if builtin:
        console.print(Text(RANDOM_WEIGHTS_NOTICE, style="yellow"))
    else:
        console.print(Text(f"Model: {model}"))
    console.print()


def print_servers(console: Console, servers: DemoServers) -> None:
    """Two lines per started server: role, URL and start time; then what it serves."""
    for server in servers.all:
        console.print(
            Text.assemble(
                ("✓ ", "green"),
                (f"{server.role + ' server':<15}", "bold"),
                (f"{server.manager.url:<26}", "cyan"),
                f"ready in {server.startup_ms / 1000:.2f} s",
            )
        )
        console.print(
            Text(f"    {server.features} · {server.manager.backend} llama.cpp", style="dim")
        )
    kind = "built-in, random weights" if servers.builtin else "your model"
    console.print(Text(f"  model: {servers.model_path.name} ({kind})", style="dim"))
    console.print()


def print_call(console: Console, record: CallRecord) -> None:
    """A call as two lines: mark, operation, endpoint, latency; then its result, dimmed."""
    mark, colour = _MARKS[record.status]
    console.print(
        Text.assemble(
            (f"{mark} ", colour),
            (f"{record.operation:<32}", "bold"),
            (f"{record.endpoint:<32}", "cyan"),
            f"{record.latency_ms:>8.1f} ms",
        ),
        no_wrap=True,
        overflow="ellipsis",
    )
    if record.status == "skipped":  # the server's reason: shown in full
        console.print(Padding(Text(record.summary, style="yellow"), (0, 0, 0, 4)))
    else:
        console.print(Text(f"    {record.summary}", style="dim"), no_wrap=True, overflow="ellipsis")


def call_status(console: Console, step: Step) -> AbstractContextManager[object]:
    """A spinner naming the call in flight (none for a streaming call: its text is live)."""
    if step.streams:
        return nullcontext()
    return console.status(f"{step.operation}  {step.endpoint}…")


class StreamPrinter:
    """Shows streamed text live, on an indented line of its own."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._open = False

    def text(self, text: str) -> None:
        """Print one streamed piece of text as it arrives."""
        if not self._open:
            self._console.print(Text("  streaming ▸ ", style="magenta"), end="")
            self._open = True
        self._console.print(Text(text.replace("\n", " ")), end="")
        self._console.file.flush()

    def end(self) -> None:
        """End the streamed line."""
        if self._open:
            self._console.print()
            self._open = False


def _tokens(record: CallRecord) -> str:
    if record.prompt_tokens is None and record.completion_tokens is None:
        return ""
    prompt = "" if record.prompt_tokens is None else str(record.prompt_tokens)
    completion = "-" if record.completion_tokens is None else str(record.completion_tokens)
    return f"{prompt}/{completion}"


def summary_table(calls: Sequence[CallRecord]) -> Table:
    """The per-call summary: latency, tokens, llama.cpp's timings, time to first chunk."""
    total_ms = sum(c.latency_ms for c in calls)
    skipped = sum(c.status == "skipped" for c in calls)
    caption = f"{len(calls)} calls, {total_ms:,.0f} ms in all"
    if skipped:
        caption += f", {skipped} skipped (the server could not do them)"
    table = Table(
        title="Summary",
        caption=caption,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0, 0, 1),  # keeps the table within 80 columns
    )
    table.add_column("Call", no_wrap=True)
    table.add_column("Latency\nms", justify="right")
    table.add_column("Tokens\nin/out", justify="right")
    table.add_column("Server\nprompt ms", justify="right")
    table.add_column("Server\ntok/s", justify="right")
    table.add_column("First\nchunk ms", justify="right")
    for call in calls:
        if call.status != "ok":
            table.add_row(
                Text(f"{call.operation} ({call.status})"), _ms(call.latency_ms), style="dim"
            )
            continue
        table.add_row(
            Text(call.operation),
            _ms(call.latency_ms),
            _tokens(call),
            _ms(call.server_prompt_ms, 2),
            _ms(call.server_predicted_per_second, 0),
            _ms(call.first_chunk_ms),
        )
    return table


def print_summary(console: Console, calls: Sequence[CallRecord]) -> None:
    console.print()
    console.print(summary_table(calls))


def print_footer(console: Console, servers: DemoServers, keep_dir: Path | None) -> None:
    """Servers stopped; where the files are kept; the random-weights reminder."""
    console.print()
    console.print(Text("✓ servers stopped", style="green"))
    if keep_dir is not None:
        console.print(f"Model files and llama.cpp server logs kept in {keep_dir}")
    if servers.builtin:
        console.print(
            Text(
                "The text above is gibberish because the built-in model has random weights;\n"
                "`llamatelemetry demo --real-model` runs the same tour on SmolLM2-135M-Instruct\n"
                "(a 98 MB download, once), `--model path/to/model.gguf` on a model of yours.",
                style="yellow",
            )
        )


def summary_json(
    servers: DemoServers,
    calls: Sequence[CallRecord],
    keep_dir: Path | None,
    telemetry: DemoTelemetry,
    spans: Sequence[SpanInfo],
) -> dict[str, Any]:
    """The machine-readable summary: version, model, servers, every measured call, and
    the spans (the root first, then one per call; empty when telemetry is off).

    ``kept_dir`` is where the model files and server logs are (null: they were removed).
    """
    return {
        "version": __version__,
        "kept_dir": None if keep_dir is None else str(keep_dir.resolve()),
        "model": {
            "path": str(servers.model_path),
            "builtin": servers.builtin,
            "random_weights": servers.builtin,
        },
        "servers": [server.to_json() for server in servers.all],
        "calls": [call.to_json() for call in calls],
        "telemetry": {"enabled": telemetry.enabled, "note": telemetry.note},
        "spans": [span.to_json() for span in spans],
    }


# -- llamatelemetry bench ---------------------------------------------------------------


def print_bench(
    console: Console, report: BenchReport, changes: list[Change], baseline: str | None
) -> None:
    """The human report: what was run against what, every run, the sweep, the capacity
    found and the changes since ``baseline``."""
    config, prompts = report.config, report.prompts
    synthetic = config.file_prompts is None
    prompt = (
        _prompt_length(config.synthetic_tokens, config.shared_prefix, prompts)
        if synthetic
        else f"prompts from {config.prompts_file}"
    )
    mode = "streaming" if config.stream else "not streaming"
    if config.endpoint != "chat":
        mode = f"{config.endpoint} · {mode}" if config.endpoint in GENERATING else config.endpoint
    per_level = (
        f"{config.duration:g} s per rate"
        if config.duration
        else f"{config.requests_per_run} requests per level"
    )
    what = f"{per_level} · {prompt} · max {config.max_tokens} tokens · {mode}"
    if report.started_server is not None:
        what += "\n" + _server_line(report.started_server)
    if report.gpu_unavailable is not None:
        what += f"\nGPUs not sampled: {report.gpu_unavailable}"
    console.print(Text.assemble(
        ("Benchmark ", "bold"), (report.url, "cyan"),
        f"  ({report.model or 'unknown model'})\n", (what, "dim"),
    ), soft_wrap=True)  # fmt: skip
    fewest, template = prompts.get("fewest_tokens"), prompts.get("template_tokens")
    if synthetic and template is not None and config.synthetic_tokens < (fewest or 0):
        console.print(Text(
            f"! --prompt-tokens {config.synthetic_tokens} is less than the chat template's own "
            f"{template} tokens and two words: the server counts "
            f"about {fewest} tokens a prompt", style="yellow",
        ), soft_wrap=True)  # fmt: skip
    console.print()
    runs, slo = list(report.runs), config.slo
    for result in runs:
        _print_run(console, result, slo)
    if len(runs) > 1:
        _print_sweep(console, runs, slo)
    if config.find_capacity is not None and slo is not None:
        _print_capacity(console, config.find_capacity, report.capacity, runs, slo)
    if baseline is not None:
        _print_changes(console, changes, baseline)


def _prompt_length(tokens: int, shared: int, prompts: dict[str, Any]) -> str:
    """The synthetic prompts' length, as the server counts it."""
    template = prompts.get("template_tokens")
    if template is None:  # the server could not apply its template for us
        return f"~{tokens + shared} prompt tokens of text (and the chat template's own)"
    described = f"~{tokens + shared} prompt tokens as the server counts them"
    if shared:
        return f"{described} (chat template's {template} included; {shared} alike in all)"
    return f"{described} (chat template's {template} included)"


def _server_line(started: dict[str, Any]) -> str:
    slots, context = started.get("total_slots"), started.get("slot_context")
    if slots is None:
        return "a llama-server started for this run"
    line = f"a llama-server started for this run: {slots} slot{'s' if slots != 1 else ''}"
    return line if context is None else f"{line} of {context:,} tokens of context"


def _metrics_table(result: RunResult) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("latency (ms)")
    table.add_column("measured by", style="dim")
    table.add_column("mean", justify="right")
    for q in result.percentiles:
        table.add_column("median" if q == 50 else percentile_name(q), justify="right")
    for metric in METRICS:
        first = True
        for side in ("client", "server"):
            summary, asked = result.summary(metric, side), result.quantiles(metric, side)
            if summary is None or asked is None:
                continue
            table.add_row(
                METRIC_TITLES[metric] if first else "",
                side,
                _ms(summary.mean, 2),
                *(_ms(value, 2) for value in asked.values()),
            )
            first = False
    return table


def _turns_table(result: RunResult) -> Table | None:
    """A multi-turn run turn by turn: TTFT and the cache as the history grows."""
    turns = result.by_turn()
    if not turns:
        return None
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("turn", "ok", "TTFT p50 ms", "TTFT p99 ms", "server TTFT p50",
                   "prompt tokens", "cached tokens"):  # fmt: skip
        table.add_column(column, justify="right")
    for turn in turns:
        table.add_row(
            str(turn.turn + 1),
            f"{turn.completed}/{turn.requests}",
            _ms(turn.ttft.median if turn.ttft else None, 2),
            _ms(turn.ttft.p99 if turn.ttft else None, 2),
            _ms(turn.server_ttft.median if turn.server_ttft else None, 2),
            "–" if turn.prompt_tokens is None else f"{turn.prompt_tokens.mean:,.0f}",
            "–" if turn.cached_tokens is None else f"{turn.cached_tokens.mean:,.0f}",
        )
    return table


def _gpu_line(result: RunResult) -> str:
    gpu = result.gpu
    assert gpu is not None
    parts = [f"{len(gpu.devices)} × {gpu.devices[0]}" if gpu.devices else "no device"]
    if gpu.utilization_mean is not None:
        parts.append(f"utilisation {gpu.utilization_mean:.0%} mean")
    if gpu.memory_peak_bytes is not None:
        parts.append(f"memory {gpu.memory_peak_bytes / 2**30:,.2f} GiB peak")
    per_token = gpu.energy_per_output_token(result.output_tokens)
    if per_token is not None:
        parts.append(f"{per_token:,.3f} J per output token")
    return " · ".join(parts)


def _print_run(console: Console, result: RunResult, slo: SLO | None = None) -> None:
    errors = Text(f"{result.errors} errors", style="red" if result.errors else "dim")
    console.print(Text.assemble(
        (result.level[0].upper() + result.level[1:], "bold"),
        f"  ·  {result.completed}/{result.requests} completed  ·  ", errors,
        f"  ·  {result.duration:,.2f} s",
    ))  # fmt: skip
    done = max(result.completed, 1)
    rows = [
        ("request throughput", f"{result.request_throughput:,.2f} req/s"),
        ("output token throughput", f"{result.output_throughput:,.1f} tok/s"),
        ("input token throughput", f"{result.input_throughput:,.1f} tok/s"),
        (
            "tokens per request",
            f"{result.input_tokens / done:,.1f} in, {result.output_tokens / done:,.1f} out",
        ),
    ]
    cached = result.cached()
    if cached is not None:
        ratio = result.cache_hit_ratio()
        share = "" if ratio is None else f" ({ratio:.1%} of the prompt tokens)"
        rows.append(
            ("cached prompt tokens", f"{cached.mean:,.1f} mean, {cached.max:,.0f} max{share}")
        )
    if result.draft_acceptance is not None:
        rows.append(("draft acceptance", f"{result.draft_acceptance:.1%} (speculative decoding)"))
    if slo is not None:
        met = slo.evaluate(result)
        verdict = "met" if met.ok else "missed"
        share = f"{met.share:.1%} of requests met it (target {slo.attainment:.0%}: {verdict})"
        rows.append(("SLO", f"{share}; goodput {met.goodput:,.2f} req/s"))
    busy, deferred = result.server_summary("busy_slots"), result.server_summary("deferred")
    if busy is not None:
        total = f" of {result.total_slots}" if result.total_slots else ""
        waiting = (
            ""
            if deferred is None
            else f"; waiting for a slot {deferred.mean:,.1f} mean, {deferred.max:,.0f} max"
        )
        rows.append(
            (
                "server (sampled)",
                f"busy slots {busy.mean:,.1f}{total} mean, {busy.max:,.0f} max{waiting}",
            )
        )
    if result.server_failures:
        rows.append(
            (
                "server samples lost",
                f"{result.server_failures:,} (its /slots or /metrics answer could not be read)",
            )
        )
    if result.gpu is not None:
        rows.append(("GPU (sampled)", _gpu_line(result)))
    lag = result.lag()
    if lag is not None:
        rows.append(("schedule lag", f"{lag.median:,.2f} ms median, {lag.p99:,.2f} ms p99"))
    delay = result.generator_delay()
    if delay is not None:
        loops = (
            "its event loop" if result.workers == 1
            else f"its event loops, one in each of {result.workers} worker processes"
        )  # fmt: skip
        rows.append(("generator delay", f"{delay.median:,.2f} ms median, {delay.p99:,.2f} ms p99 "
                                        f"(bytes waiting for {loops})"))  # fmt: skip
    read_lag = result.read_lag()
    if read_lag is not None:
        rows.append(("generator read lag", f"{read_lag.median:,.2f} ms median, "
                     f"{read_lag.p99:,.2f} ms p99 (the most a request's token waited to "
                     "be read; tokens are timed by the kernel's receive stamps)"))  # fmt: skip
    sent = result.send_delay()
    if sent is not None:
        waited = f"{sent.median:,.2f} ms median, {sent.p99:,.2f} ms p99"
        rows.append(("generator send delay", f"{waited} (before each first byte left)"))
    per_request, load = result.cpu_per_request(), result.generator_load()
    if per_request is not None and load is not None:
        per_chunk = result.cpu_per_chunk()
        chunk = "" if per_chunk is None else f", {per_chunk * 1e6:,.0f} µs per chunk"
        rows.append(("generator CPU", f"{per_request * 1000:,.2f} ms per request{chunk}; "
                                      f"{load:.0%} of one core"))  # fmt: skip
    for name, value in rows:
        console.print(Text.assemble((f"  {name:<25}", "dim"), value))
    if result.completed:
        console.print(_metrics_table(result))
        notes = [TPOT_NOTE] if result.summary("tpot") is not None else []
        notes += [ITL_NOTE] if result.summary("itl") is not None else []
        for note in notes:
            console.print(Text(f" {note}", style="dim"), soft_wrap=True)
        turns = _turns_table(result)
        if turns is not None:
            console.print(Text(" by turn of the sessions (means of the prompt and cached "
                               "tokens)", style="dim"))  # fmt: skip
            console.print(turns)
    for kind, count in result.error_types().items():
        console.print(Text(f"  {count} × {kind}", style="red"))
    for sample in result.error_samples()[:3]:
        console.print(Text(f"    {sample}", style="dim red"), soft_wrap=True)
    for warning in _warnings(result):
        console.print(Text(f"  ! {warning}", style="yellow"), soft_wrap=True)
    console.print()


#: Above this share of one core, the generator's own event loop delays what it measures.
GENERATOR_SATURATED = 0.9
#: An open-loop request sent this late (p99) no longer follows the asked-for arrivals.
LAG_WARNING_S = 0.05


def _warnings(result: RunResult) -> list[str]:
    found = []
    if not result.records:
        found.append("no request fell within this run (--duration shorter than the gaps?)")
    cache = result.cache_warning()
    if cache is not None:
        found.append(cache)
    for words in (result.delay_warning(), result.send_warning()):
        if words is not None:
            found.append(words)
    load = result.generator_load()
    if load is not None and load >= GENERATOR_SATURATED:
        found.append(
            f"the load generator used {load:.0%} of a CPU core: its own delays are in these "
            "latencies; fewer requests in flight, or several generators, measure the server"
        )
    lag = result.lag()
    if lag is not None and lag.p99 >= LAG_WARNING_S * 1000:
        found.append(
            f"requests left up to {lag.max:,.0f} ms behind their schedule (p99 "
            f"{lag.p99:,.0f} ms): the load was below the rate asked for"
        )
    return found


def _median(result: RunResult, metric: str, side: str = "client") -> str:
    summary = result.summary(metric, side)
    return _ms(summary.median if summary else None, 2)


def _percentile(result: RunResult, metric: str, which: str) -> str:
    summary = result.summary(metric)
    return _ms(getattr(summary, which) if summary else None, 1)


def _print_sweep(console: Console, results: list[RunResult], slo: SLO | None = None) -> None:
    table = Table(title="Sweep (client-side ms)", box=box.SIMPLE_HEAD, pad_edge=False)
    columns = ["level", "ok", "err", "req/s"]
    if slo is not None:
        columns += ["goodput\nreq/s", "met\nSLO"]
    columns += ["tok/s", "TTFT\np50", "TTFT\np99", "TPOT\np50", "TPOT\np99",
                "TTFT\nserver", "busy\nslots", "wait-\ning"]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for r in results:
        row = [r.level, str(r.completed), str(r.errors), f"{r.request_throughput:,.2f}"]
        if slo is not None:
            met = slo.evaluate(r)
            row += [f"{met.goodput:,.2f}", f"{met.share:.0%}" + ("" if met.ok else " ✗")]
        busy, deferred = r.server_summary("busy_slots"), r.server_summary("deferred")
        row += [
            f"{r.output_throughput:,.0f}",
            _percentile(r, "ttft", "median"),
            _percentile(r, "ttft", "p99"),
            _percentile(r, "tpot", "median"),
            _percentile(r, "tpot", "p99"),
            _median(r, "ttft", "server"),
            "-" if busy is None else f"{busy.mean:,.1f}",
            "-" if deferred is None else f"{deferred.mean:,.1f}",
        ]
        table.add_row(*row)
    console.print(table)
    if any(r.summary("tpot") is not None for r in results):
        console.print(Text(f" {TPOT_NOTE}", style="dim"), soft_wrap=True)


def _print_changes(console: Console, changes: list[Change], baseline: str) -> None:
    if not changes:
        console.print(Text(f"No level of this run is in {baseline}: nothing to compare.",
                           style="yellow"))  # fmt: skip
        return
    table = Table(title=f"Compared with {baseline}", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("level", "figure", "before", "now", "change", "95% interval", ""):
        table.add_column(column, justify="left" if column in ("level", "figure", "") else "right")
    for change in changes:
        relative = "" if change.relative is None else f"{change.relative:+.1%}"
        interval = "" if change.low is None else f"{change.low:+,.2f} .. {change.high or 0:+,.2f}"
        table.add_row(change.level, change.metric, f"{change.baseline:,.2f}",
                      f"{change.current:,.2f}", relative, interval, change.verdict)  # fmt: skip
    console.print(table)


def _print_capacity(
    console: Console, by: str, capacity: float | None, results: list[RunResult], slo: SLO
) -> None:
    if capacity is None:
        console.print(Text(f"No {by} tried met the SLO ({slo.describe()}).", style="yellow"))
        return
    at = next(
        (r for r in reversed(results)
         if (r.rate if by == "rate" else r.concurrency) == capacity),
        None,
    )  # fmt: skip
    level = f"{capacity:g} req/s" if by == "rate" else f"concurrency {capacity:g}"
    if not capacity_bounded(capacity, by, results, slo):
        level = f"at least {level} (no level tried failed it: the search stopped there)"
    line = f"Highest {by} meeting the SLO ({slo.describe()}): {level}"
    if at is not None:
        busy, deferred = at.server_summary("busy_slots"), at.server_summary("deferred")
        if busy is not None and at.total_slots:
            line += (
                f"; there the server's {at.total_slots} slots were {busy.mean:,.1f} busy on average"
            )
            if deferred is not None:
                line += f", {deferred.mean:,.1f} requests waiting for one"
    console.print(Text(line, style="bold green"), soft_wrap=True)
