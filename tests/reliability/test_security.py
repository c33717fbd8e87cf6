"""Security: the API key travels in the Authorization header and nowhere else (not in reprs,
logs, spans, exceptions, the CLI's output or the server's log); message content stays out of
telemetry unless asked for; https is verified by default, against a CA bundle when given;
the server manager binds loopback by default and warns before binding publicly without a key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamatelemetry.api import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncLlamaCppClient,
    AuthenticationError,
    LlamaCppClient,
)
from llamatelemetry.api._internal import WireTimes, wire_times
from llamatelemetry.cli import main
from llamatelemetry.server import ServerManager, ServerOptions
from llamatelemetry.telemetry import InstrumentedAsyncLlamaCppClient, InstrumentedLlamaCppClient
from llamatelemetry.testing import TinyModelFiles
from llamatelemetry.testing._fault_server import Reply, sse

from ..conftest import API_KEY
from ._support import (
    LOADING,
    MESSAGES,
    REPLY,
    LatePort,
    TallyingFaultServer,
    chunk,
    make_driver,
    tally,
)
from ._tls import Certificates, HTTPSServer, make_certificates

pytestmark = pytest.mark.usefixtures("fast_backoff")

KEY = "sk-llamatelemetry-7d3e1c0ffee"  # for fault servers: distinctive, easy to grep
WRONG_KEY = "sk-wrong-4b9a77d00d"
SECRET_TEXT = "MY-SECRET-PROMPT-91c5"  # message content that must stay out of telemetry


def secrets_in(text: str, *secrets: str) -> list[str]:
    return [s for s in secrets if s in text]


def exception_text(error: BaseException) -> str:
    """Everything an exception shows: str, repr, args and attributes, along its chain."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args)]
        parts += [f"{k}={v!r}" for k, v in vars(current).items()]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.fixture
def all_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record of every logger at DEBUG, whatever their own levels and propagation."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            self.format(record)  # renders message and exception text, as a real handler would
            records.append(record)

    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    for name in (
        "llamatelemetry",
        "llamatelemetry.server",
        "llamatelemetry.telemetry",
        "httpx",
        "httpcore",
    ):
        logging.getLogger(name)  # exist before the levels are saved, so they are restored too
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    logging.getLogger().addHandler(handler)
    non_propagating = [lg for lg in loggers if not lg.propagate and lg is not logging.getLogger()]
    for logger in non_propagating:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger().removeHandler(handler)
        for logger in non_propagating:
            logger.removeHandler(handler)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


def log_text(records: list[logging.LogRecord]) -> str:
    return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in records)


# --- the key: in the Authorization header only -------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_key_travels_only_in_the_authorization_header(kind: str) -> None:
    tally(scenarios=1)
    replies = [
        Reply(200, REPLY),
        Reply(chunks=sse(chunk("a"), chunk(finish="stop"))),
        Reply(200, {"tokens": [1]}),
    ]
    with TallyingFaultServer(replies) as server:
        driver = make_driver(kind, server.url, api_key=KEY)
        try:
            driver.chat()
            driver.stream()
            driver.run(lambda c: c.tokenize("x"))
        finally:
            driver.close()
    assert len(server.requests) == 3
    for request in server.requests:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        others = {k: v for k, v in request.headers.items() if k != "authorization"}
        assert not secrets_in(json.dumps(others) + request.path + request.body.decode(), KEY)
        assert "x-api-key" not in request.headers


def test_key_is_in_no_repr(key_server: ServerManager) -> None:
    with (
        LlamaCppClient(key_server.url, api_key=API_KEY) as client,
        InstrumentedLlamaCppClient(key_server.url, api_key=API_KEY) as instrumented,
    ):
        stream = client.chat.completions.create(messages=MESSAGES, max_tokens=2, stream=True)
        texts = [
            repr(client),
            repr(instrumented),
            repr(client.chat),
            repr(client.chat.completions),
            repr(client.health),
            repr(stream),
            repr(key_server),
            str(key_server),
            repr(key_server.options),
            str(key_server.options),
        ]
        stream.close()
        async_client = AsyncLlamaCppClient(key_server.url, api_key=API_KEY)
        texts.append(repr(async_client))
        asyncio.run(async_client.aclose())
    assert "api_key=<set>" in texts[0] and "api_key=***" in texts[6]
    assert not secrets_in("\n".join(texts), API_KEY)


def test_key_is_in_no_log_even_at_debug(
    key_server: ServerManager,
    tiny_files: TinyModelFiles,
    all_logs: list[logging.LogRecord],
    tmp_path: Path,
) -> None:
    """Succeeding and failing calls with every logger at DEBUG, and a server started with a
    key: the key is in no record (nor the wrong key a user typed)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    with InstrumentedLlamaCppClient(
        key_server.url, api_key=API_KEY, tracer_provider=provider, capture_content=True
    ) as client:
        client.chat.completions.create(messages=MESSAGES, max_tokens=2)
        list(client.chat.completions.create(messages=MESSAGES, max_tokens=2, stream=True))
        client.tokenize("hello")
        client.models.list()
    with LlamaCppClient(key_server.url, api_key=WRONG_KEY, max_retries=1) as client:
        with pytest.raises(AuthenticationError):
            client.chat.completions.create(messages=MESSAGES, max_tokens=2)
    # retries (a dropped keep-alive request spends one) and connection errors log at DEBUG
    with TallyingFaultServer(
        [Reply(200, REPLY), Reply(drop=True), Reply(503, LOADING), Reply(200, REPLY)]
    ) as server:
        with LlamaCppClient(server.url, api_key=KEY, max_retries=2) as client:
            client.chat.completions.create(messages=MESSAGES)
            client.chat.completions.create(messages=MESSAGES)
    port = LatePort()
    try:
        with LlamaCppClient(port.url, api_key=KEY, max_retries=1) as client:
            with pytest.raises(APITimeoutError, match="Connection refused"):
                client.health.wait_until_ready(timeout=0.1, interval=0.02)
    finally:
        port.close()
    # a server of our own, started and stopped with a key
    with ServerManager(port=0, log_dir=tmp_path / "logs") as manager:
        manager.start(tiny_files.model.path, api_key=KEY, n_threads=1)
        with manager.client() as client:
            assert client.health.check()["status"] == "ok"
            client.tokenize("x")
    provider.shutdown()
    text = log_text(all_logs)
    assert "retrying POST /v1/chat/completions" in text  # the debug records were captured
    assert "connection to llama-server failed (POST" in text
    assert "starting llama-server" in text
    assert not secrets_in(text, API_KEY, WRONG_KEY, KEY)
    # nor in what the servers themselves wrote
    assert manager.log_path is not None and key_server.log_path is not None
    server_logs = manager.log_path.read_text(errors="replace") + key_server.log_path.read_text(
        errors="replace"
    )
    assert not secrets_in(server_logs, API_KEY, KEY)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_key_is_in_no_exception(kind: str, key_server: ServerManager) -> None:
    """str, repr, args and attributes of every error raised, along the exception chain."""
    errors: list[BaseException] = []

    def collect(driver: Any, action: Callable[[Any], Any]) -> None:
        try:
            result = driver.run(action)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        else:
            if isinstance(result, tuple) and isinstance(result[1], BaseException):
                errors.append(result[1])

    chat = lambda c: c.chat.completions.create(messages=MESSAGES, max_tokens=2)  # noqa: E731
    wrong = make_driver(kind, key_server.url, api_key=WRONG_KEY)
    none = make_driver(kind, key_server.url)
    right = make_driver(kind, key_server.url, api_key=API_KEY)
    try:
        collect(wrong, chat)  # 401 from the real server
        collect(none, chat)
        collect(right, lambda c: c.slots.restore(0, "missing.bin"))  # 400 with the right key
    finally:
        for driver in (wrong, none, right):
            driver.close()
    faults = [
        Reply(503, LOADING),
        Reply(400, {"error": {"message": "bad"}}),
        Reply(502, "<html><title>Bad Gateway</title></html>", content_type="text/html"),
        Reply(200, b"{oops", content_type="application/json"),
        Reply(200, REPLY, delay=1.0),
        Reply(drop=True),
    ]
    with TallyingFaultServer(faults) as server:
        driver = make_driver(kind, server.url, api_key=KEY, max_retries=0, timeout=0.2)
        try:
            for _ in faults:
                collect(driver, chat)
        finally:
            driver.close()
    streams = [
        Reply(chunks=sse(chunk("a"), chunk("b")), drop_after=1),
        Reply(chunks=sse(chunk("a"), {"error": {"code": 500, "message": "m"}})),
    ]
    with TallyingFaultServer(streams) as server:
        driver = make_driver(kind, server.url, api_key=KEY)
        try:
            errors.append(driver.stream()[1])
            errors.append(driver.stream()[1])
        finally:
            driver.close()
    port = LatePort()
    try:
        driver = make_driver(kind, port.url, api_key=KEY, max_retries=0)
        try:
            collect(driver, chat)
        finally:
            driver.close()
    finally:
        port.close()
    names = sorted(type(e).__name__ for e in errors)
    assert names == sorted(
        [
            "AuthenticationError",
            "AuthenticationError",
            "BadRequestError",
            "ServiceUnavailableError",
            "BadRequestError",
            "InternalServerError",
            "APIResponseError",
            "APITimeoutError",
            "APIConnectionError",
            "StreamInterruptedError",
            "StreamError",
            "APIConnectionError",
        ]
    ), names
    for error in errors:
        assert not secrets_in(exception_text(error), API_KEY, WRONG_KEY, KEY), error
    tally(scenarios=len(errors))


def test_key_is_in_no_span_or_metric_even_when_calls_fail(key_server: ServerManager) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    for key in (API_KEY, WRONG_KEY):
        with InstrumentedLlamaCppClient(
            key_server.url,
            api_key=key,
            tracer_provider=provider,
            meter_provider=meters,
            capture_content=True,
            max_retries=0,
        ) as client:
            try:
                client.chat.completions.create(messages=MESSAGES, max_tokens=2)
                list(client.chat.completions.create(messages=MESSAGES, max_tokens=2, stream=True))
            except AuthenticationError:
                assert key == WRONG_KEY
    with TallyingFaultServer([Reply(503, LOADING)]) as server:
        with InstrumentedLlamaCppClient(
            server.url, api_key=KEY, tracer_provider=provider, meter_provider=meters, max_retries=0
        ) as client:
            with pytest.raises(Exception, match="Loading model"):
                client.chat.completions.create(messages=MESSAGES)
    spans = exporter.get_finished_spans()
    assert [s.attributes.get("error.type") for s in spans] == [
        None,
        None,
        "AuthenticationError",
        "ServiceUnavailableError",
    ]
    text = "\n".join(s.to_json() for s in spans) + reader.get_metrics_data().to_json()
    assert not secrets_in(text, API_KEY, WRONG_KEY, KEY)
    meters.shutdown()
    provider.shutdown()


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output, result.output
    output = result.output
    try:
        output += result.stdout + result.stderr
    except ValueError:  # click < 8.2 mixes stderr into output
        pass
    return f"exit {result.exit_code}\n{output}"


def test_key_is_never_in_the_cli_output(key_server: ServerManager, tmp_path: Path) -> None:
    port = LatePort()
    url = key_server.url
    try:
        runs = {
            "status": cli("status", "--url", url, "--api-key", API_KEY),
            "status-json": cli("status", "--url", url, "--api-key", API_KEY, "--json"),
            "models": cli("models", "--url", url, "--api-key", API_KEY),
            "tokenize": cli("tokenize", "hello", "--url", url, "--api-key", API_KEY),
            "complete": cli(
                "complete", "Once", "--url", url, "--api-key", API_KEY, "--max-tokens", "2"
            ),
            "chat": cli("chat", "hi", "--url", url, "--api-key", API_KEY, "--max-tokens", "2"),
            "wrong-key": cli("tokenize", "hello", "--url", url, "--api-key", WRONG_KEY),
            "env-key": cli("tokenize", "hello", "--url", url, env={"LLAMA_API_KEY": API_KEY}),
            "env-wrong": cli("chat", "hi", "--url", url, env={"LLAMA_API_KEY": WRONG_KEY}),
            "refused": cli("status", "--url", port.url, "--api-key", KEY),
            "bad-key": cli("tokenize", "x", "--url", url, "--api-key", KEY + "\n"),
            "help": cli("tokenize", "--help", env={"LLAMA_API_KEY": KEY}),
            "serve-missing": cli("serve", str(tmp_path / "missing.gguf"), "--api-key", KEY),
        }
    finally:
        port.close()
    for name in ("status", "status-json", "models", "tokenize", "complete", "chat", "env-key"):
        assert runs[name].startswith("exit 0"), (name, runs[name])
    for name in ("wrong-key", "env-wrong", "refused", "bad-key", "serve-missing"):
        assert runs[name].startswith("exit 1"), (name, runs[name])
    assert "401" in runs["wrong-key"] and "--api-key" in runs["bad-key"]
    for name, output in runs.items():
        assert not secrets_in(output, API_KEY, WRONG_KEY, KEY), (name, output)
    tally(scenarios=len(runs))


# --- a password in base_url: sent as Basic auth, shown nowhere ---------------------------

PASSWORD = "pw-S3cr3t-0a9b"


def with_password(url: str) -> str:
    return url.replace("http://", f"http://alice:{PASSWORD}@")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_password_in_base_url_travels_only_as_basic_auth(kind: str) -> None:
    replies = [Reply(200, REPLY), Reply(chunks=sse(chunk("a"), chunk(finish="stop")))]
    with TallyingFaultServer(replies) as server:
        driver = make_driver(kind, with_password(server.url).replace(PASSWORD, "pw%3Aq%40"))
        try:
            assert repr(driver.client).endswith(
                f"(base_url='http://alice:***@127.0.0.1:{server.port}')"
            )
            driver.chat()
            driver.stream()
        finally:
            driver.close()
    token = base64.b64encode(b"alice:pw:q@").decode()  # percent-decoded, as a browser does
    for request in server.requests:
        assert request.headers["authorization"] == f"Basic {token}"
        assert "pw" not in request.path and "alice" not in request.headers.get("host", "")


def test_password_in_base_url_is_shown_nowhere(
    chat_server: ServerManager, all_logs: list[logging.LogRecord]
) -> None:
    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    shown: list[str] = []
    url = with_password(chat_server.url)
    with InstrumentedLlamaCppClient(url, tracer_provider=provider, meter_provider=meters) as c:
        shown.append(repr(c))
        c.chat.completions.create(messages=MESSAGES, max_tokens=2)
        list(c.chat.completions.create(messages=MESSAGES, max_tokens=2, stream=True))
        c.tokenize("x")
        with pytest.raises(APIStatusError) as status:
            c.slots.restore(0, "missing.bin")  # a 4xx from the real server
        shown.append(exception_text(status.value))
    async_client = AsyncLlamaCppClient(url)
    shown.append(repr(async_client))
    asyncio.run(async_client.aclose())
    port = LatePort()
    try:  # refused, retried, logged
        with LlamaCppClient(with_password(port.url), max_retries=1) as client:
            with pytest.raises(APIConnectionError) as refused:
                client.chat.completions.create(messages=MESSAGES, max_tokens=2)
            shown.append(exception_text(refused.value))
            with pytest.raises(APITimeoutError) as waited:
                client.health.wait_until_ready(timeout=0.1, interval=0.02)
            shown.append(exception_text(waited.value))
    finally:
        port.close()
    for bad in (f"ftp://alice:{PASSWORD}@host", f"http://alice:{PASSWORD}@"):
        with pytest.raises(ValueError) as invalid:
            LlamaCppClient(bad)
        shown.append(exception_text(invalid.value))
    with pytest.raises(ValueError, match="use one") as both:
        LlamaCppClient(url, api_key=KEY)
    shown.append(exception_text(both.value))
    provider.shutdown()
    errors = [status.value, refused.value, waited.value]
    assert all(e.url is None or "alice" not in e.url for e in errors)
    assert "HTTP Request: POST http://127.0.0.1" in log_text(all_logs)  # httpx's own line
    text = (
        "\n".join(shown)
        + log_text(all_logs)
        + "\n".join(s.to_json() for s in spans.get_finished_spans())
        + reader.get_metrics_data().to_json()
    )
    assert not secrets_in(text, PASSWORD)
    meters.shutdown()


def test_password_in_base_url_is_never_in_the_cli_output(chat_server: ServerManager) -> None:
    port = LatePort()
    url = with_password(chat_server.url)
    try:
        runs = {
            "status": cli("status", "--url", url),
            "status-json": cli("status", "--url", url, "--json"),
            "tokenize": cli("tokenize", "hello", "--url", url),
            "chat": cli("chat", "hi", "--url", url, "--max-tokens", "2"),
            "env": cli("models", env={"LLAMA_BASE_URL": url}),
            "bench": cli(
                "bench",
                "--url",
                url,
                "-n",
                "2",
                "--max-tokens",
                "2",
                "--prompt-tokens",
                "8",
                "--json",
            ),
            "refused": cli("status", "--url", with_password(port.url)),
            "bench-refused": cli("bench", "--url", with_password(port.url), "-n", "1"),
            "bad-url": cli("tokenize", "x", "--url", f"ftp://alice:{PASSWORD}@h"),
            "with-key": cli("tokenize", "x", "--url", url, "--api-key", KEY),
        }
    finally:
        port.close()
    for name in ("status", "status-json", "tokenize", "chat", "env", "bench"):
        assert runs[name].startswith("exit 0"), (name, runs[name])
    for name in ("refused", "bench-refused", "bad-url", "with-key"):
        assert runs[name].startswith("exit 1"), (name, runs[name])
    assert "alice:***@" in runs["bench"]  # the report names the server, password masked
    for name, output in runs.items():
        assert not secrets_in(output, PASSWORD), (name, output)
    tally(scenarios=len(runs))


# --- message content ---------------------------------------------------------------------


@pytest.mark.parametrize("opted_in", [False, True], ids=["default", "opted-in"])
def test_message_content_only_when_opted_in(
    chat_server: ServerManager,
    opted_in: bool,
    monkeypatch: pytest.MonkeyPatch,
    all_logs: list[logging.LogRecord],
) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    if opted_in:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    messages = [{"role": "user", "content": SECRET_TEXT}]
    with InstrumentedLlamaCppClient(chat_server.url, tracer_provider=provider) as client:
        client.chat.completions.create(messages=messages, max_tokens=2)
        list(client.chat.completions.create(messages=messages, max_tokens=2, stream=True))
        client.completions.create(SECRET_TEXT, max_tokens=2)
        client.complete(SECRET_TEXT, max_tokens=2)
        client.embed(SECRET_TEXT)
        client.tokenize(SECRET_TEXT)
        client.apply_template(messages)

    async def in_async() -> None:
        async with InstrumentedAsyncLlamaCppClient(
            chat_server.url, tracer_provider=provider
        ) as aclient:
            await aclient.chat.completions.create(messages=messages, max_tokens=2)

    asyncio.run(in_async())
    spans = exporter.get_finished_spans()
    provider.shutdown()
    assert len(spans) == 8
    chats = [s for s in spans if s.name == "chat"]
    if opted_in:
        for span in chats:
            assert SECRET_TEXT in span.attributes["gen_ai.input.messages"]
            assert "gen_ai.output.messages" in span.attributes
    else:
        text = "\n".join(s.to_json() for s in spans)
        assert SECRET_TEXT not in text
        assert "gen_ai.input.messages" not in text and "gen_ai.output.messages" not in text
    assert SECRET_TEXT not in log_text(all_logs)  # logs never carry content, opted in or not


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_server(certificates: Certificates) -> Iterator[HTTPSServer]:
    with HTTPSServer(certificates, {"status": "ok"}) as server:
        yield server


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_https_is_verified_by_default(kind: str, https_server: HTTPSServer) -> None:
    driver = make_driver(kind, https_server.url, max_retries=0)
    try:
        with pytest.raises(APIConnectionError) as info:
            driver.run(lambda c: c.health.check())
        assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
        assert "certificate verify failed" in str(info.value)
        assert https_server.url in str(info.value)
        assert https_server.requests == 0  # nothing was sent over the unverified channel
    finally:
        driver.close()
    tally(scenarios=1)


@pytest.mark.parametrize("form", ["str", "path", "ssl-context"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_https_with_the_ca_bundle_succeeds(
    kind: str, form: str, https_server: HTTPSServer, certificates: Certificates
) -> None:
    verify: Any = {
        "str": str(certificates.ca),
        "path": certificates.ca,
        "ssl-context": ssl.create_default_context(cafile=certificates.ca),
    }[form]
    driver = make_driver(kind, https_server.url, verify=verify)
    try:
        assert driver.run(lambda c: c.health.check()) == {"status": "ok"}
        assert driver.run(lambda c: c.health.check()) == {"status": "ok"}
    finally:
        driver.close()
    assert https_server.requests == 2 and https_server.handshakes == 1  # kept alive
    tally(scenarios=1, requests=2)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_measured_call_over_https_is_timed_by_its_reads(
    kind: str, https_server: HTTPSServer, certificates: Certificates
) -> None:
    """A load generator's call (its `WireTimes` set) over TLS: its bytes are the TLS
    layer's to read, so it is timed when a read returned them, not by the kernel's
    stamps of the encrypted bytes, and it answers as any other."""
    times = WireTimes()

    async def measured_async() -> Any:
        wire_times.set(times)
        async with AsyncLlamaCppClient(https_server.url, verify=str(certificates.ca)) as c:
            return await c.health.check()

    if kind == "async":
        answer = asyncio.run(measured_async())
    else:
        token = wire_times.set(times)
        try:
            with LlamaCppClient(https_server.url, verify=str(certificates.ca)) as client:
                answer = client.health.check()
        finally:
            wire_times.reset(token)
    assert answer == {"status": "ok"}
    assert times.sent is not None and times.received is not None
    assert times.received >= times.sent and not times.kernel


def test_the_ca_bundle_of_another_ca_fails(https_server: HTTPSServer, tmp_path: Path) -> None:
    other = make_certificates(tmp_path / "other")
    with LlamaCppClient(https_server.url, verify=other.ca, max_retries=0) as client:
        with pytest.raises(APIConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            client.health.check()


def test_a_certificate_that_does_not_verify_is_not_retried(https_server: HTTPSServer) -> None:
    from llamatelemetry.api import TLSVerificationError

    with LlamaCppClient(https_server.url, max_retries=3) as client:
        with pytest.raises(TLSVerificationError, match="Pass verify=") as info:
            client.tokenize("x")
    assert "Is the server running" not in str(info.value)
    assert isinstance(info.value, requests.ConnectionError)
    assert https_server.handshakes <= 1 and https_server.requests == 0


def test_verify_false_is_possible_but_explicit(https_server: HTTPSServer) -> None:
    with LlamaCppClient(https_server.url, verify=False) as client:
        assert client.health.check() == {"status": "ok"}


def test_bad_ca_bundles_fail_at_construction(tmp_path: Path, certificates: Certificates) -> None:
    with pytest.raises(FileNotFoundError, match="CA bundle not found"):
        LlamaCppClient("https://127.0.0.1:1", verify=tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="no usable CA certificate"):
        LlamaCppClient("https://127.0.0.1:1", verify=str(garbage))
    with pytest.raises(TypeError, match="verify must be"):
        LlamaCppClient("https://127.0.0.1:1", verify=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty path"):
        LlamaCppClient("https://127.0.0.1:1", verify="")
    # a directory of CA certificates (c_rehash layout) is a bundle too
    with LlamaCppClient("https://127.0.0.1:1", verify=certificates.ca.parent) as client:
        assert not client.is_closed


# --- where the server listens ------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(address)
    return found


def test_servers_bind_loopback_by_default(chat_server: ServerManager) -> None:
    assert ServerManager().host == "127.0.0.1"
    assert ServerOptions(model_path=Path("m.gguf")).host == "127.0.0.1"
    assert chat_server.host == "127.0.0.1"
    assert listening_addresses(chat_server.port) == {"0100007F"}  # 127.0.0.1, nothing else


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "192.0.2.10", "llama.example.org"])
def test_public_bind_without_a_key_warns(
    host: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = ServerManager(host=host, port=0, log_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="llamatelemetry.server"):
        with pytest.raises(FileNotFoundError):  # nothing is launched: the model is missing
            manager.start(tmp_path / "missing.gguf")
    [record] = [r for r in caplog.records if r.name == "llamatelemetry.server"]
    assert record.levelno == logging.WARNING
    assert host in record.getMessage() and "without an API key" in record.getMessage()


@pytest.mark.parametrize(
    ("host", "api_key"),
    [
        ("127.0.0.1", None),
        ("localhost", None),
        ("::1", None),
        ("127.0.0.2", None),
        ("0.0.0.0", "k"),
        ("::", "k"),
    ],
)
def test_loopback_or_keyed_bind_does_not_warn(
    host: str, api_key: str | None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = ServerManager(host=host, port=0, log_dir=tmp_path)
    with caplog.at_level(logging.DEBUG, logger="llamatelemetry.server"):
        with pytest.raises(FileNotFoundError):
            manager.start(tmp_path / "missing.gguf", api_key=api_key)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
