"""``serve``, ``chat``, ``complete``, ``embed``, ``tokenize``, ``rerank``, ``status`` and
``models`` through click's runner, against real llama.cpp servers (no mocks)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.cli import main
from llamatelemetry.cli._user_errors import CliError, api_errors
from llamatelemetry.server import ServerManager
from llamatelemetry.testing import TinyModelFiles, start_chat_server, start_rerank_server

from ..conftest import API_KEY

TOOLS_TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "tools-chatml.jinja"
SCRIPT = Path(sys.executable).parent / "llamatelemetry"
CLIENT_COMMANDS = ["chat", "complete", "embed", "tokenize", "rerank", "status", "models"]
JSON_COMMANDS = ["complete", "embed", "tokenize", "rerank", "status", "models"]
DOCUMENTS = [
    "Flash attention is a memory-efficient attention algorithm.",
    "CUDA is a parallel computing platform by NVIDIA.",
    "Python is a popular programming language.",
]


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def ok(*args: str, input: str | None = None) -> Result:
    result = invoke(*args, input=input)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def clean_failure(*args: str) -> str:
    """Run a command that must fail like a good CLI: exit 1, a message, no traceback."""
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert "Error: " in result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""  # the message goes to stderr
    return result.output


# Runs the rest of its arguments with SIGINT's default action restored: a child of a
# background job (a CI step started with &) inherits an ignored SIGINT and would never see
# the Ctrl-C a test sends it.
INTERRUPTIBLE = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


def interrupt(process: subprocess.Popen[str]) -> tuple[str, str]:
    """A Ctrl-C, then the rest of the process's output (stdout, stderr)."""
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=30)


def reap(process: subprocess.Popen[str]) -> None:
    """Kill a process a failed test left running."""
    if process.poll() is None:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: each held open until all are chosen, so the kernel
    cannot hand the same one out twice (separate `free_port` calls may)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def prompt_tokens(output: str) -> list[int]:
    """The prompt token counts of the stats lines, in order."""
    return [int(n) for n in re.findall(r"\[(\d+) prompt tokens", output)]


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerManager]:
    with start_chat_server(tmp_path_factory.mktemp("cli-chat"), n_parallel=2) as server:
        yield server


@pytest.fixture(scope="module")
def url(chat_server: ServerManager) -> str:
    return chat_server.url


@pytest.fixture
def client(url: str) -> Iterator[LlamaCppClient]:
    with LlamaCppClient(url) as client:
        yield client


def predicted_total(client: LlamaCppClient) -> float:
    return client.metrics.values()["llamacpp:tokens_predicted_total"]


# -- help ---------------------------------------------------------------------------------


def test_help_everywhere() -> None:
    listing = ok("--help").output
    for command in ["demo", "serve", *CLIENT_COMMANDS]:
        assert command in listing
        assert f"{command} [OPTIONS]" in ok(command, "--help").output
    for command in CLIENT_COMMANDS:
        help_text = ok(command, "--help").output
        assert "--url" in help_text and "LLAMA_BASE_URL" in help_text
        assert "--api-key" in help_text and "LLAMA_API_KEY" in help_text
    for command in JSON_COMMANDS:
        assert "--json" in ok(command, "--help").output
    serve_help = ok("serve", "--help").output
    for option in ("--host", "--port", "--ctx-size", "--parallel", "--threads", "--gpu-layers",
                   "--embedding", "--reranking", "--pooling", "--lora", "--api-key",
                   "--no-metrics", "--no-slots", "--slot-save-path", "--alias", "--backend",
                   "--server-path"):  # fmt: skip
        assert option in serve_help


# -- the model's text tools -----------------------------------------------------------------


def test_tokenize(url: str, client: LlamaCppClient) -> None:
    assert ok_json("tokenize", "Hello", "--url", url) == client.tokenize("Hello")
    pieces = ok_json("tokenize", "Hello", "--pieces", "--url", url)
    assert pieces == client.tokenize("Hello", with_pieces=True)
    assert [p["id"] for p in pieces] == client.tokenize("Hello")
    no_bos = ok_json("tokenize", "Hello", "--no-special", "--url", url)
    assert no_bos == client.tokenize("Hello", add_special=False) == client.tokenize("Hello")[1:]
    shown = ok("tokenize", "Hello", "--url", url).output
    assert str(client.tokenize("Hello")) in shown
    assert f"{len(pieces)} tokens" in shown
    table = ok("tokenize", "Hello", "--pieces", "--url", url).output
    assert "'<s>'" in table and "Piece" in table


def test_embed(url: str, client: LlamaCppClient) -> None:
    out = ok_json("embed", "What is CUDA?", "llama.cpp", "--url", url)
    assert out["dims"] == 64
    assert [item["text"] for item in out["data"]] == ["What is CUDA?", "llama.cpp"]
    assert [len(item["embedding"]) for item in out["data"]] == [64, 64]
    single = ok_json("embed", "What is CUDA?", "--url", url)["data"][0]["embedding"]
    assert single == pytest.approx(client.embed("What is CUDA?"), abs=1e-5)
    assert out["usage"]["prompt_tokens"] > 0
    shown = ok("embed", "What is CUDA?", "--url", url).output
    assert "'What is CUDA?'  64 dims" in shown
    assert "…]" in shown  # only the first values


def test_rerank(tmp_path_factory: pytest.TempPathFactory) -> None:
    with start_rerank_server(tmp_path_factory.mktemp("cli-rerank")) as server:
        query = "What is flash attention?"
        ranked = ok_json("rerank", query, *DOCUMENTS, "--url", server.url)
        scores = [r["score"] for r in ranked]
        assert scores == sorted(scores, reverse=True)
        assert sorted(r["index"] for r in ranked) == [0, 1, 2]
        assert all(r["document"] == DOCUMENTS[r["index"]] for r in ranked)
        with server.client() as client:
            assert scores == pytest.approx([r["score"] for r in client.rerank(query, DOCUMENTS)])
        top = ok_json("rerank", query, *DOCUMENTS, "--top-n", "1", "--url", server.url)
        assert top == ranked[:1]
        table = ok("rerank", query, *DOCUMENTS, "--url", server.url).output
        best, worst = (DOCUMENTS[r["index"]][:12] for r in (ranked[0], ranked[-1]))
        assert table.index(best) < table.index(worst)
        assert f"{ranked[0]['score']:.4f}" in table


# -- generation ------------------------------------------------------------------------------


def test_complete_json(url: str) -> None:
    out = ok_json("complete", "The GGUF file format", "--max-tokens", "5", "--url", url)
    assert out["completion_tokens"] == 5
    assert out["finish_reason"] == "length"
    assert out["prompt_tokens"] > 0
    assert out["content"]
    assert out["timings"]["predicted_n"] == 5


def test_complete_streams_text_and_stats(url: str) -> None:
    result = ok("complete", "The GGUF file format", "--max-tokens", "6", "--seed", "7",
                "--temperature", "0.5", "--url", url)  # fmt: skip
    assert result.stdout.strip()
    assert "6 generated" in result.stderr and "tok/s" in result.stderr
    whole = ok("complete", "The GGUF file format", "--max-tokens", "6", "--seed", "7",
               "--temperature", "0.5", "--no-stream", "--url", url)  # fmt: skip
    assert whole.stdout == result.stdout  # same seed: same text, streamed or not
    assert "--stream" in clean_failure("complete", "x", "--json", "--stream", "--url", url)


def test_chat_prompt_streams_the_answer(url: str, client: LlamaCppClient) -> None:
    before = predicted_total(client)
    result = ok("chat", "hi", "--max-tokens", "8", "--url", url)
    assert result.stdout.strip()
    assert "8 generated" in result.stderr and "finish length" in result.stderr
    assert predicted_total(client) - before == 8
    with_system = ok("chat", "hi", "--max-tokens", "8", "--system", "Answer in one word.",
                     "--url", url)  # fmt: skip
    assert prompt_tokens(with_system.stderr)[0] > prompt_tokens(result.stderr)[0]


def chat_at_a_terminal(url: str, typed: str, *args: str) -> tuple[str, str]:
    """Run ``llamatelemetry chat`` with its stdin on a pseudo-terminal, as a person at a
    terminal does (stdout and stderr piped), typing ``typed``; its (stdout, stderr)."""
    import pty  # POSIX only, like the terminal it stands in for

    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [str(SCRIPT), "chat", *args, "--url", url],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(terminal)
        os.write(controller, typed.encode())
        out, err = process.communicate(timeout=60)
    finally:
        os.close(controller)
    assert process.returncode == 0, out + err
    assert "Traceback" not in err, err
    return out, err


def test_interactive_chat_one_turn(url: str, client: LlamaCppClient) -> None:
    before = predicted_total(client)
    out, err = chat_at_a_terminal(url, "hello\n/exit\n", "--max-tokens", "8")
    assert predicted_total(client) - before == 8  # exactly one request
    assert len(prompt_tokens(err)) == 1
    assert "/exit" in err  # the banner says how to leave
    assert "you> " in err and "you" not in out  # stdout holds the answer only
    assert out.strip()


def test_interactive_chat_keeps_the_history(url: str, client: LlamaCppClient) -> None:
    before = predicted_total(client)
    # Blank lines are skipped; end of input (Ctrl-D) ends the conversation.
    _, err = chat_at_a_terminal(url, "hello\n\nand more\n\x04", "--max-tokens", "8")
    assert predicted_total(client) - before == 16  # two turns
    first, second = prompt_tokens(err)
    # The second turn resends the first question and the 8-token answer with the new one.
    assert second > first + 8


def test_chat_reads_piped_stdin_as_one_prompt(url: str, client: LlamaCppClient) -> None:
    question = "hello\nand more"
    asked = ok("chat", question, "--max-tokens", "8", "--temperature", "0", "--url", url)
    for args in (["--url", url], ["-", "--url", url]):  # `echo ... | chat`, `chat -`
        before = predicted_total(client)
        piped = ok("chat", *args, "--max-tokens", "8", "--temperature", "0", input=question + "\n")
        assert predicted_total(client) - before == 8  # one request: the whole input
        assert prompt_tokens(piped.stderr) == prompt_tokens(asked.stderr)  # not a literal "-"
        assert piped.stdout == asked.stdout  # the answer and nothing else
        assert "you" not in piped.output and "Chatting with" not in piped.output
    result = invoke("chat", "--url", url, input="  \n")
    assert result.exit_code == 1 and "standard input was empty" in result.stderr
    assert result.stdout == ""


def test_chat_stops_at_512_tokens_unless_told(tmp_path: Path) -> None:
    assert "[default: 512]" in ok("chat", "--help").output
    # The tiny model never stops by itself: like a real one looping at temperature 0.
    with start_chat_server(tmp_path, n_parallel=1, ctx_size=1024) as server:
        capped = ok("chat", "hi", "--temperature", "0", "--url", server.url)
        assert "512 generated" in capped.stderr and "finish length" in capped.stderr
        unlimited = ok("chat", "hi", "--max-tokens", "-1", "--url", server.url)
        generated = re.search(r"(\d+) generated", unlimited.stderr)
        assert generated and int(generated[1]) > 512, unlimited.stderr


# -- status and models ------------------------------------------------------------------------


def test_status_json(url: str, client: LlamaCppClient) -> None:
    status = ok_json("status", "--url", url)
    assert status["url"] == url
    assert status["health"] == {"status": "ok"}
    [model] = status["models"]
    assert model["id"] == client.models.list()[0]["id"]
    assert model["n_embd"] == 64 and model["n_ctx"] == 1024
    assert [(s["id"], s["state"]) for s in status["slots"]] == [(0, "idle"), (1, "idle")]
    assert status["slots_disabled"] is None
    assert status["metrics"]["llamacpp:tokens_predicted_total"] == predicted_total(client)
    assert status["metrics_disabled"] is None


def test_status_table(url: str) -> None:
    out = ok("status", "--url", url).output
    for text in ("Health", "ok", "tiny-model.gguf", "n_embd 64", "Slots (0 of 2 busy)", "idle",
                 "Metrics", "tokens generated", "requests processing"):  # fmt: skip
        assert text in out, out


def test_status_with_metrics_and_slots_disabled(tmp_path: Path) -> None:
    with start_chat_server(tmp_path, n_parallel=1, metrics=False, slots=False) as server:
        status = ok_json("status", "--url", server.url)
        assert status["slots"] is None and status["metrics"] is None
        assert status["slots_disabled"] == "start with --slots"
        assert status["metrics_disabled"] == "start with --metrics"
        out = ok("status", "--url", server.url).output
        assert "Slots: disabled (start with --slots)" in out
        assert "Metrics: disabled (start with --metrics)" in out
        with server.client() as client:  # a command that needs them: the server's hint, once
            for call, flag in (
                (client.metrics.values, "--metrics"),
                (client.slots.list, "--slots"),
            ):
                with pytest.raises(CliError) as refused, api_errors(server.url):
                    call()
                assert f"Start it with `{flag}`" in refused.value.message
                assert refused.value.detail == ""


def test_piped_tables_keep_long_values_whole_without_trailing_spaces(tmp_path: Path) -> None:
    deep = tmp_path / ("a-directory-with-a-rather-long-name-" * 4) / "models"
    with start_chat_server(deep, n_parallel=1) as server:
        assert server.options is not None
        model = str(server.options.model_path)
        assert len(model) > 200
        for args in (["models"], ["status"], ["tokenize", "Hello", "--pieces"]):
            lines = ok(*args, "--url", server.url).stdout.splitlines()
            assert [line for line in lines if line != line.rstrip()] == [], args
            if args != ["tokenize", "Hello", "--pieces"]:
                assert any(model in line for line in lines), lines  # on one line, whole
        [row] = [line for line in ok("models", "--url", server.url).stdout.splitlines()
                 if model in line]  # fmt: skip
        assert row.split()[1:] == ["2,048", "2,048", "64", "32,000", "4.2", "M", "16.7", "MB"]


def test_models(url: str, client: LlamaCppClient) -> None:
    listed = ok_json("models", "--url", url)
    assert [m["id"] for m in listed] == [m["id"] for m in client.models.list()]
    assert listed[0]["meta"]["n_embd"] == 64
    out = ok("models", "--url", url).output
    assert "n_ctx_train" in out and "2,048" in out and "16.7 MB" in out


def test_url_from_the_environment(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_BASE_URL", url)
    assert ok_json("status")["url"] == url


# -- errors ---------------------------------------------------------------------------------


def test_no_server_is_a_clean_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for args in (["status"], ["embed", "x"], ["chat", "hi"]):
        out = clean_failure(*args, "--url", dead)
        assert f"could not connect to {dead}" in out, out
        assert "llamatelemetry serve MODEL" in out


def test_server_refusal_shows_status_and_message(url: str) -> None:
    out = clean_failure("rerank", "q", "a", "b", "--url", url)
    assert "HTTP 501" in out and "Start it with `--reranking`" in out  # the server's words
    assert "llamatelemetry serve MODEL ... --reranking" in out  # and the fix, as a command
    assert "reranking=True" not in out  # not the Python keyword
    assert out.lower().count("start") == 1, out  # the hint once: the server's, not ours too
    assert out.count("--reranking") == 2, out  # in the hint, and in the command


def test_embed_without_pooling_says_how_to_serve_embeddings(tmp_path: Path) -> None:
    with start_chat_server(tmp_path, n_parallel=1, pooling=None) as server:
        out = clean_failure("embed", "What is CUDA?", "--url", server.url)
    assert "Pooling type 'none' is not OAI compatible" in out  # the server's words
    assert "llamatelemetry serve MODEL ... --pooling mean" in out
    assert out.count("--pooling mean") == 1, out  # the fix said once
    assert 'pooling="mean"' not in out


def test_bad_arguments_are_clean_errors(url: str) -> None:
    assert "--url" in clean_failure("status", "--url", "not-a-url")
    assert "max_tokens" in clean_failure("chat", "x", "--max-tokens", "0", "--url", url)


def test_api_key(key_server: ServerManager) -> None:
    url = key_server.url
    out = clean_failure("tokenize", "Hello", "--url", url)
    assert "HTTP 401" in out and "--api-key" in out
    wrong = "wrong-key-7d2e"
    assert wrong not in clean_failure("tokenize", "Hello", "--url", url, "--api-key", wrong)
    assert ok_json("tokenize", "Hello", "--url", url, "--api-key", API_KEY)[0] == 1
    result = CliRunner(env={"LLAMA_API_KEY": API_KEY}).invoke(main, ["status", "--url", url])
    assert result.exit_code == 0, result.output
    assert API_KEY not in result.output


# -- serve ------------------------------------------------------------------------------------


def test_serve_errors(tmp_path: Path, tiny_files: TinyModelFiles, url: str) -> None:
    assert "model file not found: /nonexistent.gguf" in clean_failure("serve", "/nonexistent.gguf")
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    assert "is not a GGUF file" in clean_failure("serve", str(text))
    model = str(tiny_files.model.path)
    port = url.rsplit(":", 1)[1]
    taken = clean_failure("serve", model, "--port", port, "--log-dir", str(tmp_path))
    assert "already accepts connections" in taken and "--port 0" in taken
    assert "LoRA adapter not found" in clean_failure("serve", model, "--lora", "/nope.gguf")
    assert "--server-path" in clean_failure(
        "serve", model, "--backend", "embedded", "--server-path", sys.executable
    )
    budget = clean_failure("serve", model, "--backend", "embedded", "--reasoning-budget", "256")
    assert "reasoning_budget -1" in budget and "binary" in budget
    assert "neither Jinja text" in clean_failure("serve", model, "--chat-template", "nope x")


def test_serve_runs_until_ctrl_c(tmp_path: Path, tiny_files: TinyModelFiles) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secret = "serve-secret-91ab"
    command = [*INTERRUPTIBLE, str(SCRIPT), "serve", str(tiny_files.model.path),
               "--port", str(port), "--threads", "1", "--parallel", "2", "--embedding",
               "--pooling", "mean", "--api-key", secret, "--log-dir", str(tmp_path),
               "--chat-template", str(TOOLS_TEMPLATE)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = read_until(process, "Press Ctrl-C to stop.")
        assert httpx.get(f"{url}/health", trust_env=False).json() == {"status": "ok"}
        with LlamaCppClient(url, secret) as client:
            assert len(client.slots.list()) == 2
            assert len(client.embed("x")) == 64
            caps = client.props.get()["chat_template_caps"]
            assert caps["supports_tools"] is True  # the template given, not the model's own
        rest, err = interrupt(process)
    finally:
        reap(process)
    out = ready + rest
    assert process.returncode == 0, out + err
    assert f"llama-server ready at {url}" in out
    assert str(tmp_path / f"llama-server-{port}.log") in out
    assert f"server stopped; its log is kept at {tmp_path / f'llama-server-{port}.log'}" in out
    assert "Traceback" not in out + err
    assert secret not in out + err
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


def read_until(process: subprocess.Popen[str], marker: str) -> str:
    """The process's output up to and including the line with ``marker``."""
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or marker not in lines[-1]:
        line = process.stdout.readline()
        assert line, "".join(lines) + process.communicate()[1]  # it exited first
        lines.append(line)
    return "".join(lines)
