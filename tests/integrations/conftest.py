from __future__ import annotations

import gc
import sys
import warnings
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _frameworks_leftovers() -> Iterator[None]:
    """After each test: the async openai clients a framework keeps (LiteLLM in its client
    cache, the others on their model objects) and leaves open when a loop closes are
    collected here, with the ResourceWarning that says so (the framework's, not ours)
    silenced."""
    yield
    litellm = sys.modules.get("litellm")
    if litellm is not None:
        litellm.in_memory_llm_clients_cache.flush_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
