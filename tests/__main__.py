"""What the tests need besides the project's packages, fetched or built once and cached:

    python -m tests     # the real model (SmolLM2), a real llama-server binary, and
                        # nginx, Prometheus and curl from Debian's packages (for the fleet)

The README's test command and CI run it before pytest. It says first what it will fetch
and build, then one line per step; the tools' own output goes to a log in the cache,
shown (its last lines) only when a step fails.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from . import debian, llama_server, models
from ._setup_log import StepFailed

T = TypeVar("T")


def _home(path: Path) -> str:
    try:
        return f"~/{path.relative_to(Path.home())}"
    except ValueError:
        return str(path)


def _step(number: int, name: str, work: Callable[[Callable[[str], None]], T]) -> T:
    start = time.monotonic()

    def say(line: str) -> None:
        print(f"      {line}", flush=True)

    result = work(say)
    print(f"[{number}/3] {name}: {result} ({time.monotonic() - start:.0f} s)", flush=True)
    return result


def main() -> int:
    model = models.smollm2_path()
    todo = []
    if not model.is_file():
        todo.append("  - SmolLM2-135M-Instruct, a real small model: a 98 MB download")
    if llama_server.cached() is None:
        todo.append(
            f"  - llama-server, built from llama.cpp's source: a {llama_server.SOURCE_MB} MB "
            f"download, then {llama_server.BUILD_MINUTES}"
        )
    if debian.missing():
        todo.append(f"  - {', '.join(debian.missing())} from Debian's packages (apt-get)")
    cache = _home(model.parents[1])
    if todo:
        print(f"Fetching and building what the tests need, once, into {cache}:", flush=True)
        print("\n".join(todo), flush=True)
    else:
        print(f"Everything the tests need is in {cache} and installed.", flush=True)
    try:
        _step(1, "model", lambda say: _home(models.fetch(say)))
        _step(2, "llama-server", lambda say: _home(llama_server.build(say)))
        _step(3, "fleet", lambda say: debian.install())
    except (StepFailed, OSError) as exc:
        print(f"python -m tests: {exc}", file=sys.stderr)
        return 1
    return 0


sys.exit(main())
