"""Tiny GGUF models, written with ``gguf``, that a real llama.cpp server loads in milliseconds.

The vocabulary has Llama 2's size (32,000 ids) so that ids from examples written for real
models detokenize. The weights are random, so the text is gibberish; but every endpoint
works (chat, streaming, completion, infill, tokenize, embeddings, rerank, LoRA),
generation is deterministic under a fixed seed and temperature 0, and end-of-sequence is
suppressed so a request always produces exactly ``max_tokens`` tokens unless a stop
sequence matches. That makes counts testable.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TinyModel", "build_tiny_model", "build_tiny_lora", "CHATML_TEMPLATE"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
_WORDS = [
    "▁the",
    "▁a",
    "▁is",
    "▁of",
    "▁and",
    "▁to",
    "▁in",
    "▁what",
    "▁hello",
    "▁world",
    "▁model",
    "▁token",
    "▁llama",
    "▁GPU",
    "▁fast",
    "▁local",
    "er",
    "in",
    "on",
    "at",
    "en",
    "es",
    "or",
    "an",
    "th",
    "he",
    "ing",
    "ed",
]
_PIECES = (
    ["▁"]
    + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    + list("0123456789.,!?:;'\"-()[]{}/\\")
)


@dataclass(frozen=True)
class TinyModel:
    """What was written: the facts a test asserts against."""

    path: Path
    n_vocab: int
    n_embd: int
    n_layer: int
    n_ctx_train: int
    bos_token_id: int
    eos_token_id: int


def _filler_pieces() -> Iterator[str]:
    """Two- and three-letter pieces, with and without the word-start marker, in a fixed order."""
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    for size in (2, 3):
        for combo in itertools.product(letters, repeat=size):
            piece = "".join(combo)
            yield "▁" + piece
            yield piece


def _vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    import gguf

    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    tokens += _SPECIALS
    types += [gguf.TokenType.CONTROL] * len(_SPECIALS)
    scores = [0.0] * len(tokens)
    normal = itertools.chain(_WORDS, _PIECES, (p for p in _filler_pieces() if p not in _WORDS))
    for rank, piece in enumerate(itertools.islice(normal, max(0, n_vocab - len(tokens)))):
        tokens.append(piece)
        types.append(gguf.TokenType.NORMAL)
        scores.append(-float(rank))
    if len(tokens) != n_vocab:
        raise ValueError(f"n_vocab must be between {len(tokens)} and 35000, got {n_vocab}")
    return tokens, scores, [int(t) for t in types]


def build_tiny_model(
    path: str | Path,
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 128,
    n_ctx_train: int = 2048,
    n_vocab: int = 32000,
    seed: int = 0,
    chat_template: str = CHATML_TEMPLATE,
) -> TinyModel:
    """Write a llama-architecture GGUF with an SPM byte-fallback vocabulary and a ChatML
    template."""
    import gguf
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens, scores, types = _vocab(n_vocab)
    ids = {tok: i for i, tok in enumerate(tokens)}

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("llamatelemetry-tiny")
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(ids["<s>"])
    writer.add_eos_token_id(ids["</s>"])
    writer.add_unk_token_id(ids["<unk>"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_uint32("tokenizer.ggml.eot_token_id", ids["<|im_end|>"])
    writer.add_uint32("tokenizer.ggml.fim_pre_token_id", ids["<|fim_prefix|>"])
    writer.add_uint32("tokenizer.ggml.fim_suf_token_id", ids["<|fim_suffix|>"])
    writer.add_uint32("tokenizer.ggml.fim_mid_token_id", ids["<|fim_middle|>"])
    writer.add_chat_template(chat_template)

    def noise(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    # Dimension 0 of every embedding is a large constant, so after the final RMS norm it
    # acts as a bias input: column 0 of the output matrix pushes control and byte tokens
    # far down. Text then comes out as readable word pieces and never ends early.
    embd = noise(n_vocab, n_embd)
    embd[:, 0] = 4.0
    output = noise(n_vocab, n_embd, scale=0.5)
    output[:, 0] = 0.0
    output[np.asarray(types) != int(gguf.TokenType.NORMAL), 0] = -30.0
    writer.add_tensor("token_embd.weight", embd)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    writer.add_tensor("output.weight", output)
    for layer in range(n_layer):
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(n_embd, np.float32))
        for name in ("q", "k", "v", "output"):
            writer.add_tensor(f"blk.{layer}.attn_{name}.weight", noise(n_embd, n_embd, scale=0.2))
        writer.add_tensor(f"blk.{layer}.ffn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{layer}.ffn_gate.weight", noise(n_ff, n_embd, scale=0.2))
        writer.add_tensor(f"blk.{layer}.ffn_up.weight", noise(n_ff, n_embd, scale=0.2))
        writer.add_tensor(f"blk.{layer}.ffn_down.weight", noise(n_embd, n_ff, scale=0.05))
    _finish(writer)
    return TinyModel(
        path=path,
        n_vocab=n_vocab,
        n_embd=n_embd,
        n_layer=n_layer,
        n_ctx_train=n_ctx_train,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
    )


def build_tiny_lora(
    path: str | Path, *, n_embd: int = 64, n_layer: int = 2, rank: int = 4, seed: int = 1
) -> Path:
    """Write a LoRA adapter GGUF for :func:`build_tiny_model` (query projections of every layer)."""
    import gguf
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    for layer in range(n_layer):
        a = (rng.standard_normal((rank, n_embd)) * 0.5).astype(np.float32)
        b = (rng.standard_normal((n_embd, rank)) * 0.5).astype(np.float32)
        writer.add_tensor(f"blk.{layer}.attn_q.weight.lora_a", a)
        writer.add_tensor(f"blk.{layer}.attn_q.weight.lora_b", b)
    _finish(writer)
    return path


def _finish(writer: object) -> None:
    writer.write_header_to_file()  # type: ignore[attr-defined]
    writer.write_kv_data_to_file()  # type: ignore[attr-defined]
    writer.write_tensors_to_file()  # type: ignore[attr-defined]
    writer.close()  # type: ignore[attr-defined]
