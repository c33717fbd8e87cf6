"""What the frameworks' tests and examples leave behind (LangChain's, LiteLLM's and
llama-index's openai clients, left open as a reader's script leaves them at its exit)."""

from __future__ import annotations

import gc
import sys
import warnings


def forget_leftovers() -> None:
    """Collect the frameworks' open clients now (LiteLLM's from its client cache), with the
    ResourceWarnings that say they were left open (the frameworks', not ours) silenced,
    rather than met by a later test's collection."""
    litellm = sys.modules.get("litellm")
    if litellm is not None:
        litellm.in_memory_llm_clients_cache.flush_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
