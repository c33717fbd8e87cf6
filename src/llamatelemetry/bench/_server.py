"""The llama-server a benchmark starts for itself (`BenchConfig.model`): slots for the
load asked for, context for its longest request in every slot, and what the server says
it has once it is up (the report records it)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..server import ServerManager
from ._config import BenchConfig, BenchConfigError
from ._prompts import Item, Prompt, messages_of

__all__ = ["MODEL_START_TIMEOUT", "context_size", "slots", "started_server"]

MODEL_START_TIMEOUT = 300.0
#: The slots of a started server for runs without a fixed concurrency: llama-server's own
#: default.
DEFAULT_SLOTS = 4


def slots(config: BenchConfig) -> int:
    """One slot for each request of the largest concurrency level. Runs without a fixed
    concurrency (rates, a replay, a capacity search) get at least ``max_concurrency``,
    else llama-server's own default."""
    floor = (config.max_concurrency or DEFAULT_SLOTS) if config.open_loop else 1
    return max([*config.levels, floor])


def context_size(config: BenchConfig, parallel: int) -> int:
    """``ctx_size``, else a context that holds the longest request in each slot."""
    if config.ctx_size is not None:
        return config.ctx_size
    return _context_for(
        [parallel],
        config.synthetic_tokens + config.shared_prefix,
        config.max_tokens,
        config.file_prompts,
    )


def _context_for(
    levels: Sequence[int], prompt_tokens: int, max_tokens: int, prompts: Sequence[Item] | None
) -> int:
    if prompts is not None:  # about 3 characters a token, generously rounded up
        chats = [messages_of(p) for p in prompts]
        longest = max((len(str(m.get("content", ""))) for p in chats for m in p), default=0)
        prompt_tokens = longest // 3 + 16 * max(len(p) for p in chats)
        given = (p.tokens or 0 for p in prompts if isinstance(p, Prompt))  # lengths alone
        prompt_tokens = max([prompt_tokens, *given])
        own = (p.max_tokens or 0 for p in prompts if isinstance(p, Prompt))
        max_tokens = max([max_tokens, *own])
    per_slot = int(prompt_tokens * 1.25) + max_tokens + 128
    total = max(levels) * per_slot
    return max(2048, -(-total // 256) * 256)


def _described(manager: ServerManager) -> dict[str, Any]:
    """What the started server says it is: its slots, and each slot's context."""
    try:
        with manager.client() as client:
            props = client.props.get()
    except Exception:  # noqa: BLE001 - the run itself will meet any trouble
        props = {}
    settings = props.get("default_generation_settings") or {}
    return {
        "total_slots": props.get("total_slots"),
        "slot_context": settings.get("n_ctx"),
    }


def _embedding_pooling(model: Path) -> str | None:
    """``mean`` for a model whose file names no pooling (a generative one: llama-server's
    OpenAI-style embeddings need one); None to keep the model's own, or when the file
    cannot be read here (without the ``gguf`` package, the server decides)."""
    try:
        from gguf import GGUFReader

        fields = GGUFReader(model).fields
        field = fields["general.architecture"]
        architecture = bytes(field.parts[field.data[0]]).decode()
    except Exception:  # noqa: BLE001 - not readable here: the server will say
        return None
    return None if f"{architecture}.pooling_type" in fields else "mean"


@contextmanager
def started_server(config: BenchConfig) -> Iterator[tuple[ServerManager, dict[str, Any]]]:
    """The server ``config.model`` asks for, on a free port, and what it says it is;
    stopped on leaving. Raises what `ServerManager.start` raises (`FileNotFoundError`,
    `ServerStartError`), its refusals of a setting as a `BenchConfigError`."""
    assert config.model is not None
    parallel = slots(config)
    manager = ServerManager(port=0)
    with manager:
        try:
            manager.start(
                config.model,
                n_parallel=parallel,
                ctx_size=context_size(config, parallel),
                n_threads=config.threads,
                timeout=MODEL_START_TIMEOUT,
                # what the endpoint needs of the server: embeddings, or ranking's pooling
                embedding=config.endpoint == "embeddings",
                reranking=config.endpoint == "rerank",
                pooling=_embedding_pooling(config.model)
                if config.endpoint == "embeddings"
                else None,
            )
        except ValueError as exc:
            raise BenchConfigError("{problem}", problem=str(exc)) from None
        yield manager, {"model": str(config.model), **_described(manager)}
