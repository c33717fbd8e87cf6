"""The README's Python examples, run in order in one namespace against a real server.

Only two things are substituted: the model path (the tiny test model) and port 8080
(a free port, so a server the developer runs on 8080 does not interfere).
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
from pathlib import Path

from llamatelemetry.testing import TinyModelFiles
from llamatelemetry.testing._otlp import OTLPReceiver

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_readme_examples_run(tiny_files: TinyModelFiles, tmp_path: Path) -> None:
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 3
    port = str(free_port())
    scope: dict[str, object] = {"__name__": "readme"}
    out = io.StringIO()
    receiver = OTLPReceiver()  # stands in for the collector the README points at
    try:
        with contextlib.redirect_stdout(out):
            for block in blocks:
                code = (
                    block.replace("/path/to/model.gguf", str(tiny_files.model.path))
                    .replace("http://127.0.0.1:4318", receiver.url)
                    .replace("8080", port)
                    .replace("/tmp/llama-test", str(tmp_path))
                )
                exec(compile(code, "README.md", "exec"), scope)
    finally:
        server = scope.get("server")
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
        receiver.close()
    spans = receiver.spans()
    assert [s["name"] for s in spans] == ["chat", "chat"]
    assert spans[0]["resource"]["service.name"] == "my-app"
    assert spans[0]["attributes"]["gen_ai.usage.output_tokens"] == 64
    assert spans[1]["attributes"]["gen_ai.usage.output_tokens"] == 16
    assert len(scope["text"]) > 0  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert lines[0] == "Server status: ok"
    assert "Embedding dims: 64" in lines and "Slots: 4, busy: 0" in lines
    assert "Same answer twice: True" in lines
    assert "8 replies, 128 tokens" in lines
    assert any(re.fullmatch(r"32 tokens, TTFT \d+\.\d ms, \d+ tokens/s", line) for line in lines)
    assert any(line.startswith("EngineStats(requests=9,") for line in lines)
    assert re.fullmatch(r"\[1(, \d+)+\]", lines[-1])  # tokenize("Hello") with BOS


# -- the table of calls ---------------------------------------------------------------------

CALL_TABLE_HEADER = "| Call | Endpoint | Returns |"


def _arguments(text: str) -> tuple[int, list[str]]:
    """``"id, filename"`` → (2, []); ``"prompt, ..., stream=False, **kw"`` → (1, ["stream"])."""
    positional, keywords = 0, []
    for arg in (a.strip() for a in text.split(",")):
        if not arg or arg == "..." or arg.startswith("*"):
            continue
        if "=" in arg:
            keywords.append(arg.split("=", 1)[0].strip())
        else:
            positional += 1
    return positional, keywords


def call_table_mismatches(markdown: str) -> list[str]:
    """The calls a page's table of calls shows with arguments the methods do not take.

    A cell such as ``client.slots.list()``, ``.save/.restore(id, filename)`` names methods
    of ``client.slots``; each is bound to as many positional arguments as the page shows,
    and to the keywords it shows by name.
    """
    import inspect
    import operator

    from llamatelemetry.api import LlamaCppClient

    table = markdown.split(CALL_TABLE_HEADER, 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert rows, "the table of calls has no rows"
    wrong = []
    with LlamaCppClient("http://127.0.0.1:9") as client:  # nothing is sent
        for row in rows:
            owner = "client"
            for call in re.findall(r"`([^`]*\))`", row.split(" | ", 1)[0]):
                names, args = re.fullmatch(r"([\w./]+)\((.*)\)", call).groups()  # type: ignore[union-attr]
                if names.startswith("client."):
                    owner, _, names = names.rpartition(".")
                positional, keywords = _arguments(args)
                for name in (n.lstrip(".") for n in names.split("/")):
                    method = operator.attrgetter(f"{owner}.{name}".removeprefix("client."))(client)
                    try:
                        inspect.signature(method).bind_partial(
                            *[None] * positional, **dict.fromkeys(keywords)
                        )
                    except TypeError as exc:
                        wrong.append(f"{owner}.{name}({args}): {exc}")
    return wrong


def test_readme_calls_take_the_arguments_shown() -> None:
    assert call_table_mismatches(README.read_text()) == []
