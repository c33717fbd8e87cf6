"""Every example of the spec page (shared/spec/api-client.txt), run verbatim against a real
llama.cpp server; only the port is changed. Each also checks it did what the page says.

The examples are kept in tests/spec_examples/ (one file each, copied byte for byte); when
the spec page is beside the repository, a test proves the copies are still verbatim.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamatelemetry.server import ServerManager
from llamatelemetry.testing import TinyModelFiles

EXAMPLES = Path(__file__).parent / "spec_examples"
SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "api-client.txt"
SPEC_URL = "http://127.0.0.1:8080"


def example(name: str) -> str:
    return (EXAMPLES / f"{name}.py").read_text()


def run(name: str, url: str, namespace: dict[str, Any] | None = None) -> tuple[str, dict]:
    """Run an example with the spec's URL pointed at ``url``; return (stdout, namespace)."""
    code = example(name).replace(SPEC_URL, url)
    scope: dict[str, Any] = {"__name__": f"spec_example_{name}"} if namespace is None else namespace
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"spec_examples/{name}.py", "exec"), scope)
    return out.getvalue(), scope


@pytest.fixture
def page(chat_server: ServerManager) -> Iterator[dict[str, Any]]:
    """The page's running context: its "Creating a Client" example, against our server."""
    _, scope = run("02_creating_client", chat_server.url)
    yield scope
    scope["client"].close()


@pytest.mark.skipif(not SPEC.exists(), reason="the spec page is not beside this checkout")
def test_examples_are_verbatim_copies_of_the_spec() -> None:
    spec = SPEC.read_text()
    names = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    assert len(names) == 18
    for name in names:
        assert example(name).rstrip("\n") in spec, f"{name} differs from the spec page"
    assert spec.count("print(") == sum(example(n).count("print(") for n in names)


def test_port_mismatch_and_creating_a_client(chat_server: ServerManager) -> None:
    from llamatelemetry.api import LlamaCppClient

    _, scope = run("01_port_mismatch", chat_server.url, {"LlamaCppClient": LlamaCppClient})
    assert scope["client"].base_url == chat_server.url
    _, scope = run("02_creating_client", chat_server.url)
    assert scope["client"].base_url == chat_server.url
    assert LlamaCppClient().base_url == "http://127.0.0.1:8080"  # the page's default


def test_chat_openai_style(page: dict[str, Any]) -> None:
    out, scope = run("03_chat_openai_style", "", page)
    content = scope["response"].choices[0].message.content
    assert out == f"{content}\nTokens used: 128\n"  # the tiny model always runs to max_tokens


def test_chat_convenience(page: dict[str, Any]) -> None:
    out, scope = run("04_chat_convenience", "", page)
    assert scope["response"].usage.completion_tokens == 64
    assert out == scope["response"].choices[0].message.content + "\n"


def test_streaming_chat(page: dict[str, Any]) -> None:
    out, scope = run("05_streaming_chat", "", page)
    assert out.endswith("\n") and len(out) > 128
    last = scope["chunk"]
    assert last.choices == [] and last.usage.completion_tokens == 128


def test_embeddings(page: dict[str, Any], tiny_files: TinyModelFiles) -> None:
    out, _ = run("06_embeddings", "", page)
    n = tiny_files.model.n_embd
    assert out.splitlines() == [
        f"Embedding dimension: {n}",
        f"Index 0: {n} dimensions",
        f"Index 1: {n} dimensions",
        f"Index 2: {n} dimensions",
    ]


def test_tokenize_and_detokenize(page: dict[str, Any]) -> None:
    out, scope = run("07_tokenize", "", page)
    tokens = scope["tokens"]
    assert out == f"Token count: {len(tokens)}\nToken IDs: {tokens}\n"
    assert tokens[0] == 1 and len(tokens) > 3
    out, scope = run("08_detokenize", "", page)
    assert out == f"Text: {scope['text']}\n" and scope["text"].startswith("<s>")


def test_rerank(rerank_server: ServerManager) -> None:
    _, scope = run("02_creating_client", rerank_server.url)
    out, scope = run("09_rerank", "", scope)
    lines = out.splitlines()
    assert len(lines) == 4
    scores = [float(re.match(r"Score: (-?[\d.]+) -- ", line).group(1)) for line in lines]
    assert scores == sorted(scores, reverse=True)
    assert sorted(line.split(" -- ")[1] for line in lines) == sorted(
        d[:60] for d in scope["documents"]
    )
    scope["client"].close()


def test_models(page: dict[str, Any], chat_server: ServerManager) -> None:
    out, _ = run("10_models_list", "", page)
    name = Path(chat_server.options.model_path).name
    assert re.fullmatch(rf"Model: \S*{re.escape(name)}\n", out)
    out, _ = run("11_model_details", "", page)
    assert re.fullmatch(rf"Loaded model: \S*{re.escape(name)}\n", out)


def test_slots(page: dict[str, Any]) -> None:
    out, _ = run("12_slots", "", page)
    assert out.splitlines()[:4] == [f"Slot {i}: state=idle" for i in range(4)]


def test_lora(page: dict[str, Any], chat_server: ServerManager) -> None:
    out, scope = run("13_lora", "", page)
    [adapter] = scope["adapters"]
    assert adapter["scale"] == 1.0
    assert out == f"Active adapters: {scope['adapters']}\n"


def test_health(page: dict[str, Any]) -> None:
    out, _ = run("14_health", "", page)
    assert out == "Status: ok\n"


def test_metrics(page: dict[str, Any]) -> None:
    out, _ = run("15_metrics", "", page)
    assert "# TYPE llamacpp:prompt_tokens_total counter" in out
    assert "llamacpp:tokens_predicted_total" in out


def test_error_handling_success_and_refused(chat_server: ServerManager) -> None:
    out, scope = run("17_error_handling", chat_server.url)
    assert out == scope["response"].choices[0].message.content + "\n"
    scope["client"].close()
    out, _ = run("17_error_handling", "http://127.0.0.1:9")
    assert out == "Server not running. Start it with ServerManager or InferenceEngine.\n"


def test_complete_example(chat_server: ServerManager, tiny_files: TinyModelFiles) -> None:
    out, scope = run("18_complete_example", chat_server.url)
    lines = out.splitlines()
    assert lines[0] == "Server status: ok"
    assert lines[-3:] == [
        f"Prompt tokens: {len(scope['tokens'])}",
        f"Embedding dims: {tiny_files.model.n_embd}",
        "Active slots: 4",
    ]
    assert scope["response"].usage.completion_tokens == 128
    scope["client"].close()
