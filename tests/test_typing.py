"""The public API as a type checker sees it: user code in tests/typing_samples/ must pass
``mypy --strict``, and a misuse must be caught (so the check can fail)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).parent / "typing_samples"

pytest.importorskip("mypy")


def run_mypy(*targets: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(cache),
            *targets,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def kept() -> Path:
    """A folder kept between runs beside the model and the binary, for mypy's cache and the
    misuse file (whose path must not change: mypy's cache knows modules by their path).
    mypy checks each cached module against its source, so a changed file is checked again;
    a cold run spends ten seconds on the package's dependencies."""
    from .models import cache_dir

    folder = cache_dir().parent / "typing"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_user_code_type_checks() -> None:
    bad = kept() / "misuse.py"
    bad.write_text(
        "from llamatelemetry.api import AsyncLlamaCppClient, LlamaCppClient\n"
        "async def f(client: AsyncLlamaCppClient) -> None:\n"
        "    count: int = await client.tokenize('x')\n"
        "    reply = await client.chat.completions.create(messages=[], stream=True)\n"
        "    print(reply.choices)\n"
        "    await client.chat.completions.create([], max_tokens='x')\n"
        "    await client.complete('x', temprature=0.5)\n"
        "def g(client: LlamaCppClient) -> None:\n"
        "    text: int = client.detokenize([1])\n"
        "    client.chat.completions.create([], max_tokens='x')\n"
        "    client.chat_completion(messages=[], top_p='high')\n"
        "LlamaCppClient(timout=5)\n"
        "AsyncLlamaCppClient(max_retries='3')\n"
    )
    result = run_mypy(str(SAMPLES), str(bad), cache=kept() / "mypy-cache")
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert all(line.startswith(str(bad)) for line in errors), result.stdout
    lines = sorted({int(line.split(":")[1]) for line in errors})
    assert lines == [3, 5, 6, 7, 9, 10, 11, 12, 13], result.stdout  # one per misuse, both clients
    assert '"list[Any]", variable has type "int"' in result.stdout
    assert '"AsyncStream[ChatCompletionChunk]" has no attribute "choices"' in result.stdout
    assert '"str", variable has type "int"' in result.stdout
    assert 'Unexpected keyword argument "timout"' in result.stdout
    assert 'did you mean "temperature"' in result.stdout
