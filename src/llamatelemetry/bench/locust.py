"""``bench``'s workload from Locust, when one machine's generator is not enough: Locust's
distributed mode (a master and any number of workers, on as many machines) sends it, and
the master writes what every request measured as one ``bench`` JSON report, which
``llamatelemetry bench --baseline`` compares and reads like its own.

A locustfile of one line (the ``locust`` extra: ``pip install 'llamatelemetry[locust]'``)::

    from llamatelemetry.bench.locust import LlamaCppUser  # noqa: F401

then, against a llama-server (or a fleet behind a proxy)::

    locust -f locustfile.py --master --headless -u 64 -r 64 -t 60s --expect-workers 2 \\
        --host http://127.0.0.1:8080 --llama-max-tokens 128 --llama-report bench.json
    locust -f locustfile.py --worker --master-host MASTER   # on each worker machine

Each Locust user is a closed-loop stream: a request, then the next, of any endpoint
``bench`` loads (``--llama-endpoint``: chat by default, completions, responses, messages,
embeddings or rerank), timed as ``bench`` times them (the client's socket stamps: from the
request's first byte written to each chunk's arrival), with the server's own ``timings``
and the cached prompt tokens it reports. Every request is also a Locust request (named
after its endpoint), so Locust's own figures and web UI work as usual. The report's run
is at the concurrency of the users, its start times from each worker's wall clock (keep
the machines' clocks in time, NTP, as for any distributed measurement). Under Locust's
gevent a reading waits for the other users of its process to yield; on Linux, over plain
TCP, each read carries the kernel's receive time, so a token read late is still timed
when it came, unless the next one came first (then it takes the next one's time). Over
TLS, and elsewhere, a token is timed when its read returned, and reads late by that wait
(the report's server-side figures are the server's own either way).

Options (every node reads its own, and refuses what ``bench`` would refuse):
``--llama-endpoint``, ``--llama-max-tokens``, ``--llama-prompt-words`` (synthetic prompts
of about that many words) or ``--llama-prompts-file`` (a dataset, as ``bench
--prompts-file`` reads), ``--llama-ignore-eos``, ``--llama-no-stream``,
``--llama-documents`` (rerank), ``--llama-timeout``; the master's ``--llama-report FILE``
(and ``--llama-html FILE``) for the report.
"""

from __future__ import annotations

import datetime
import json
import logging
import random
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from locust import User, constant, events, task
from locust.runners import WorkerRunner

from ..api import LlamaCppClient, redact_url
from ..api._internal import WireTimes, wire_times
from ._config import BenchConfig, BenchConfigError
from ._endpoints import DEFAULT_DOCUMENTS, ENDPOINTS, endpoint_of, finish, request_of, send_sync
from ._html import write_html
from ._prompts import FilePrompts, PromptSource, SyntheticPrompts, load_prompts_file
from ._records import RequestRecord, RunResult
from ._report import BenchReport

__all__ = ["RECORD_MESSAGE", "LlamaCppUser"]

log = logging.getLogger("llamatelemetry.bench")

#: The message a worker sends its master for each request it measured.
RECORD_MESSAGE = "llamatelemetry_record"
_FIELDS = {f.name for f in fields(RequestRecord)}


def _options(parser: Any, **_: Any) -> None:
    group = parser.add_argument_group("llamatelemetry")
    group.add_argument("--llama-endpoint", choices=ENDPOINTS, default="chat",
                       help="What each request calls.")  # fmt: skip
    group.add_argument("--llama-max-tokens", type=int, default=128, help="Tokens to generate.")
    group.add_argument("--llama-prompt-words", type=int, default=64,
                       help="Synthetic prompts of about this many words.")  # fmt: skip
    group.add_argument("--llama-prompts-file", default=None, help="A dataset of prompts.")
    group.add_argument("--llama-ignore-eos", action="store_true",
                       help="Generate every --llama-max-tokens token.")  # fmt: skip
    group.add_argument("--llama-no-stream", action="store_true",
                       help="Ask for whole answers (no TTFT, TPOT or ITL then).")  # fmt: skip
    group.add_argument("--llama-documents", type=int, default=DEFAULT_DOCUMENTS,
                       help="Rerank: documents each query is ranked against.")  # fmt: skip
    group.add_argument("--llama-timeout", type=float, default=600.0,
                       help="Seconds one request may take in all.")  # fmt: skip
    group.add_argument("--llama-report", default=None,
                       help="Master: write the bench JSON report of the run here.")  # fmt: skip
    group.add_argument("--llama-html", default=None, help="Master: and the HTML report here.")


class _Collected:
    """What the master (or a local run) heard of every request, and since when."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.users = 0
        self.nodes: set[str] = set()  # the workers (or "local") requests came from
        self.started_at = datetime.datetime.now(datetime.timezone.utc)


_collected = _Collected()


def _init(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None and hasattr(options, "llama_endpoint"):
        try:
            bench_config(environment.host or "", options, 1, 1)  # refused now, not per request
        except BenchConfigError as exc:
            sys.exit(f"llamatelemetry: {exc.worded(_flag)}")
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return

    def heard(environment: Any, msg: Any, **_: Any) -> None:
        _collected.records.extend(msg.data)
        _collected.nodes.add(str(msg.node_id))

    runner.register_message(RECORD_MESSAGE, heard)


def _start(environment: Any, **_: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        _collected.started_at = datetime.datetime.now(datetime.timezone.utc)


def _spawned(user_count: int, **_: Any) -> None:
    _collected.users = max(_collected.users, user_count)


def _quitting(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    options = environment.parsed_options
    if options is None or not (options.llama_report or options.llama_html):
        return
    report = build_report(environment.host or "", options, _collected, len(_collected.nodes))
    data = report.to_dict()
    if options.llama_report:
        Path(options.llama_report).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        log.info("bench report of %d requests written to %s", report.requests,
                 options.llama_report)  # fmt: skip
    if options.llama_html:
        write_html(data, list(report.runs), options.llama_html)


def build_report(host: str, options: Any, collected: _Collected, workers: int) -> BenchReport:
    """The run as one ``bench`` report: every request heard, in the order they left."""
    rows = sorted(collected.records, key=lambda r: r["wall_started"])
    origin = rows[0]["wall_started"] if rows else 0.0
    records = []
    for index, row in enumerate(rows):
        record = RequestRecord(**{k: v for k, v in row.items() if k in _FIELDS})
        record.index = index
        record.started = row["wall_started"] - origin
        records.append(record)
    users = collected.users or 1
    duration = max((r.started + r.latency for r in records), default=0.0)
    config = bench_config(host, options, len(records), users)
    result = RunResult(users, config.stream, options.llama_max_tokens, records, duration,
                       workers=max(workers, 1))  # fmt: skip
    prompts: dict[str, Any] = {"kind": "locust", "workers": workers}
    started_at = collected.started_at.isoformat(timespec="seconds")
    return BenchReport(config, redact_url(host.rstrip("/")), started_at, (result,), prompts,
                       None, None, None)  # fmt: skip


def bench_config(host: str, options: Any, requests: int, users: int) -> BenchConfig:
    """The ``bench`` configuration the Locust options amount to (what the report says
    was run); `BenchConfigError` for options ``bench`` would refuse together."""
    return BenchConfig(
        url=host or None, requests=max(requests, 1), concurrency=[users],
        max_tokens=options.llama_max_tokens, ignore_eos=options.llama_ignore_eos,
        prompts_file=Path(options.llama_prompts_file) if options.llama_prompts_file else None,
        prompt_tokens=None if options.llama_prompts_file else options.llama_prompt_words,
        warmup=0, scrape_interval=0, timeout=options.llama_timeout,
        endpoint=options.llama_endpoint, stream=not options.llama_no_stream,
        documents=options.llama_documents,
    )  # fmt: skip


def _flag(setting: str) -> str:
    """A `BenchConfig` setting as the Locust option that sets it."""
    named = {"prompt_tokens": "prompt-words", "stream": "no-stream", "no_stream": "no-stream"}
    return "--llama-" + named.get(setting, setting.replace("_", "-"))


# Locust calls these at its start, its run's start and end, and its exit.
events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]
events.init.add_listener(_init)  # type: ignore[no-untyped-call]
events.test_start.add_listener(_start)  # type: ignore[no-untyped-call]
events.spawning_complete.add_listener(_spawned)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_quitting)  # type: ignore[no-untyped-call]


class LlamaCppUser(User):
    """One closed-loop stream of requests of the ``--llama-endpoint`` (streamed chat by
    default) to the Locust ``--host``."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.endpoint = endpoint_of(options.llama_endpoint)
        self.settings = {
            "max_tokens": options.llama_max_tokens, "temperature": None, "seed": None,
            "stream": not options.llama_no_stream,
            "ignore_eos": options.llama_ignore_eos, "documents": options.llama_documents,
        }  # fmt: skip
        self.sent = 0
        self.llama = LlamaCppClient(self.host, max_retries=0, timeout=options.llama_timeout,
                                    total_timeout=options.llama_timeout)  # fmt: skip
        self.prompts: PromptSource
        if options.llama_prompts_file:
            self.prompts = FilePrompts(load_prompts_file(options.llama_prompts_file))
            self.prompts.take(random.randrange(self.prompts.span))  # each user its own start
        else:
            self.prompts = SyntheticPrompts(options.llama_prompt_words, seed=None)

    def on_stop(self) -> None:
        self.llama.close()

    @task
    def request(self) -> None:
        [item] = self.prompts.take(1)
        request = request_of(item, (), self.settings)
        self.sent += 1
        record = RequestRecord(self.sent)  # (a rerank's documents are drawn by its index)
        wire = WireTimes()
        token = wire_times.set(wire)
        wall, begun = time.time(), time.perf_counter()
        failure: BaseException | None = None
        try:
            send_sync(self.endpoint, self.llama, request, record, wire, None)
        except Exception as exc:  # noqa: BLE001 - a failed request is a result
            failure = exc
        finally:
            wire_times.reset(token)
            finish(record, wire, begun, failure, self.llama.total_timeout)
        self.environment.events.request.fire(
            request_type="POST", name=self.endpoint.name, response_time=record.latency * 1000.0,
            response_length=record.output_tokens, context={},
            exception=None if record.ok else RuntimeError(record.error),
        )  # fmt: skip
        row = asdict(record)
        row["wall_started"] = wall + record.send_delay
        self.environment.runner.send_message(RECORD_MESSAGE, [row])
