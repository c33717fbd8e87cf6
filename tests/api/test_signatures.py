"""One definition of each parameter set, and the places that must agree with it: the
client options, the sampling parameters, the async client's stub."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from llamatelemetry.api import (
    SAMPLING_DEFAULTS,
    AsyncLlamaCppClient,
    LlamaCppClient,
    SamplingParams,
)
from llamatelemetry.api._base_client import BaseClient
from llamatelemetry.api._config import ClientOptions
from llamatelemetry.api.resources import _params
from llamatelemetry.telemetry import InstrumentedAsyncLlamaCppClient, InstrumentedLlamaCppClient

ROOT = Path(__file__).resolve().parents[2]


def test_client_options_are_the_base_clients_keywords() -> None:
    keywords = [
        name
        for name, p in inspect.signature(BaseClient.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert list(ClientOptions.__annotations__) == keywords


@pytest.mark.parametrize(
    "cls",
    [
        LlamaCppClient,
        AsyncLlamaCppClient,
        InstrumentedLlamaCppClient,
        InstrumentedAsyncLlamaCppClient,
    ],
)
def test_an_unknown_client_option_is_a_type_error_with_a_suggestion(cls: type) -> None:
    with pytest.raises(
        TypeError, match=r"unexpected keyword argument 'timout': did you mean 'timeout'"
    ):
        cls("http://127.0.0.1:9", timout=5)
    with pytest.raises(TypeError, match="'bogus'.*known: timeout, max_retries"):
        cls("http://127.0.0.1:9", bogus=1)


def test_sampling_params_name_every_checked_parameter() -> None:
    named = set(SamplingParams.__annotations__)
    assert set(SAMPLING_DEFAULTS) <= named
    assert named - set(SAMPLING_DEFAULTS) == set(_params._KNOWN_EXTRAS)
    # the defaults are the first eight, in OpenAI's order
    assert list(SamplingParams.__annotations__)[:8] == list(SAMPLING_DEFAULTS)


def test_the_defaults_go_out_when_left_out_and_none_leaves_them_to_the_server() -> None:
    body = _params.sampling_body({}, native=False)
    assert body == {k: v for k, v in SAMPLING_DEFAULTS.items() if v is not None}
    body = _params.sampling_body({"temperature": None, "max_tokens": 7, "min_p": 0.1}, native=True)
    assert "temperature" not in body and body["n_predict"] == 7 and body["min_p"] == 0.1
    assert "max_tokens" not in body


def test_the_async_stub_is_generated_from_the_sync_code() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "async_stub.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_stub_names_every_public_method_of_the_sync_client() -> None:
    stub = (ROOT / "src/llamatelemetry/api/_async_client.pyi").read_text()
    public = [
        name
        for name, member in inspect.getmembers(LlamaCppClient)
        if not name.startswith("_") and callable(member) and name not in ("close",)
    ]
    missing = [name for name in public if f"async def {name}(" not in stub]
    assert missing == []
    for resource in (
        "chat",
        "completions",
        "embeddings",
        "models",
        "props",
        "slots",
        "lora",
        "health",
        "metrics",
    ):
        assert f"def {resource}(self) -> Async" in stub
