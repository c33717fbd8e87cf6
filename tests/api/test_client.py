"""Every public call of LlamaCppClient against a real llama.cpp server (tiny random model).

Random weights make gibberish, so assertions are on structure, counts and determinism.
"""

from __future__ import annotations

import base64
import struct
import time
from pathlib import Path

import pytest
import requests

from llamatelemetry.api import (
    AuthenticationError,
    BadRequestError,
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    EmbeddingsResponse,
    LlamaCppClient,
    NativeCompletion,
    NotSupportedError,
    Stream,
)
from llamatelemetry.server import ServerManager
from llamatelemetry.testing import TinyModelFiles

from ..conftest import API_KEY, wait_until_idle

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is GGUF format?"},
]


def greedy(client: LlamaCppClient, **kw: object) -> ChatCompletion:
    return client.chat.completions.create(messages=MESSAGES, temperature=0, **kw)


# --- chat ------------------------------------------------------------------------------


def test_chat_completion_is_typed_and_counts_add_up(client: LlamaCppClient) -> None:
    response = client.chat.completions.create(messages=MESSAGES, max_tokens=12)
    assert isinstance(response, ChatCompletion)
    assert response.object == "chat.completion"
    assert response.id and response.id.startswith("chatcmpl-")
    [choice] = response.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    # The tiny model never emits end-of-sequence: it always runs to max_tokens.
    assert choice.finish_reason == "length"
    usage = response.usage
    assert usage.completion_tokens == 12
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    timings = response.timings
    assert timings.predicted_n == 12
    assert timings.prompt_n + timings.cache_n == usage.prompt_tokens
    assert timings.predicted_per_second > 0 and timings.predicted_ms > 0


def test_chat_prompt_tokens_match_template_and_tokenizer(client: LlamaCppClient) -> None:
    prompt = client.apply_template(MESSAGES)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    response = greedy(client, max_tokens=1)
    assert response.usage.prompt_tokens == len(client.tokenize(prompt))


def test_same_seed_and_temperature_zero_is_deterministic(client: LlamaCppClient) -> None:
    texts = {greedy(client, max_tokens=16, seed=s).choices[0].message.content for s in (1, 2, 3)}
    assert len(texts) == 1
    sampled = [
        client.chat.completions.create(messages=MESSAGES, max_tokens=16, temperature=1.5, seed=seed)
        .choices[0]
        .message.content
        for seed in (11, 11, 12, 13)
    ]
    assert sampled[0] == sampled[1]
    assert len(set(sampled)) > 1


def test_stop_sequence_ends_generation(client: LlamaCppClient) -> None:
    text = greedy(client, max_tokens=24).choices[0].message.content
    cut = text.strip()[:3]
    stopped = greedy(client, max_tokens=24, stop=[cut])
    assert stopped.choices[0].finish_reason == "stop"
    assert cut not in stopped.choices[0].message.content
    assert stopped.usage.completion_tokens < 24


def test_extra_llama_params_pass_through(client: LlamaCppClient) -> None:
    response = greedy(
        client,
        max_tokens=4,
        n_probs=3,
        min_p=0.0,
        repeat_penalty=1.1,
        cache_prompt=False,
        logprobs=True,
        top_logprobs=2,
    )
    content = response.choices[0].logprobs["content"]
    assert len(content) == 4
    assert all(len(entry["top_logprobs"]) == 2 for entry in content)


def test_grammar_constrains_output(client: LlamaCppClient) -> None:
    response = greedy(client, max_tokens=8, grammar='root ::= ("yes" | "no")')
    assert response.choices[0].message.content in ("yes", "no")


def test_chat_completion_singular_equals_nested(client: LlamaCppClient) -> None:
    nested = greedy(client, max_tokens=8)
    singular = client.chat_completion(messages=MESSAGES, max_tokens=8, temperature=0)
    assert singular.choices[0].message.content == nested.choices[0].message.content


def test_unknown_server_fields_are_kept(client: LlamaCppClient) -> None:
    response = greedy(client, max_tokens=2)
    data = response.to_dict()
    assert data["system_fingerprint"] == response.system_fingerprint
    assert "timings" in data and data["timings"]["predicted_n"] == 2
    assert response.model_extra is not None  # extra="allow" keeps what we do not model


# --- streaming -------------------------------------------------------------------------


def test_stream_chunk_sequence_and_usage(client: LlamaCppClient) -> None:
    stream = client.chat.completions.create(
        messages=MESSAGES, max_tokens=10, stream=True, temperature=0
    )
    assert isinstance(stream, Stream)
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 10
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    last = chunks[-1]
    assert len(last.choices) == 0
    assert last.usage.completion_tokens == 10
    assert last.timings.predicted_n == 10
    assert last.choices[0].delta.content is None  # the spec loop must not raise here
    assert len({c.id for c in chunks}) == 1
    assert stream.closed
    joined = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert joined == greedy(client, max_tokens=10).choices[0].message.content


def test_spec_streaming_loop_runs_verbatim(
    client: LlamaCppClient, capsys: pytest.CaptureFixture[str]
) -> None:
    response = client.chat.completions.create(
        messages=[{"role": "user", "content": "Write a poem about GPUs."}],
        max_tokens=128,
        stream=True,
    )

    for chunk in response:
        if chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()
    printed = capsys.readouterr().out
    assert len(printed) > 128  # 128 tokens of word pieces, then a newline


def test_stream_break_and_close_frees_the_slot(client: LlamaCppClient) -> None:
    stream = client.chat.completions.create(messages=MESSAGES, max_tokens=2000, stream=True)
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    stream.close()
    assert stream.closed
    assert client.health.check()["status"] == "ok"
    client.health.wait_until_ready(5)
    # The server notices the closed connection and stops generating.
    deadline = time.monotonic() + 5
    while any(s["state"] == "processing" for s in client.slots.list()):
        assert time.monotonic() < deadline, "slot still processing after the stream was closed"
        time.sleep(0.05)


def test_stream_as_context_manager(client: LlamaCppClient) -> None:
    with client.chat.completions.create(messages=MESSAGES, max_tokens=5, stream=True) as stream:
        first = next(stream)
        assert first.choices[0].delta.role == "assistant"
    assert stream.closed
    assert greedy(client, max_tokens=1).usage.completion_tokens == 1  # pool still fine


# --- completions -----------------------------------------------------------------------


def test_v1_completions(client: LlamaCppClient) -> None:
    response = client.completions.create("The GGUF format is", max_tokens=6, temperature=0)
    assert isinstance(response, Completion)
    assert response.choices[0].text
    assert response.usage.completion_tokens == 6
    chunks = list(
        client.completions.create("The GGUF format is", max_tokens=6, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks) == response.choices[0].text
    assert chunks[-1].usage.completion_tokens == 6


def test_native_complete_and_stream(client: LlamaCppClient) -> None:
    result = client.complete("The GGUF format is", max_tokens=7, temperature=0)
    assert isinstance(result, NativeCompletion)
    assert result.stop is True and result.tokens_predicted == 7
    assert result.finish_reason == "length"
    assert result.timings.predicted_n == 7
    chunks = list(client.complete("The GGUF format is", max_tokens=7, temperature=0, stream=True))
    assert "".join(c.content for c in chunks) == result.content
    assert chunks[-1].stop is True and all(not c.stop for c in chunks[:-1])
    assert chunks[-1].timings.predicted_n == 7


def test_native_complete_accepts_token_ids(client: LlamaCppClient) -> None:
    ids = client.tokenize("The GGUF format is")
    by_ids = client.complete(ids, max_tokens=5, temperature=0)
    by_text = client.complete("The GGUF format is", max_tokens=5, temperature=0)
    assert by_ids.content == by_text.content


def test_infill(client: LlamaCppClient) -> None:
    result = client.infill("def add(a, b):\n    ", "\n    return c\n", max_tokens=5, temperature=0)
    assert result.tokens_predicted == 5 and result.content
    again = client.infill("def add(a, b):\n    ", "\n    return c\n", max_tokens=5, temperature=0)
    assert again.content == result.content


# --- embeddings ------------------------------------------------------------------------


def test_embed_dimension_is_n_embd(client: LlamaCppClient, tiny_files: TinyModelFiles) -> None:
    vector = client.embed("What is CUDA?")
    assert isinstance(vector, list) and all(isinstance(x, float) for x in vector)
    assert len(vector) == tiny_files.model.n_embd == 64
    assert client.embed("What is CUDA?") == vector
    assert client.embed("Something else entirely") != vector
    many = client.embed(["What is CUDA?", "b"])
    assert len(many) == 2 and many[0] == pytest.approx(vector, abs=1e-2)  # batching adds noise


def test_embeddings_create(client: LlamaCppClient, tiny_files: TinyModelFiles) -> None:
    inputs = ["llamatelemetry", "llama.cpp", "CUDA programming"]
    response = client.embeddings.create(input=inputs, model="/path/to/model.gguf")
    assert isinstance(response, EmbeddingsResponse)
    assert [item.index for item in response.data] == [0, 1, 2]
    assert all(len(item.embedding) == tiny_files.model.n_embd for item in response.data)
    assert response.usage.prompt_tokens > 0
    single = client.embeddings.create(input="llama.cpp")
    assert single.data[0].embedding == pytest.approx(response.data[1].embedding)
    encoded = client.embeddings.create(input="llama.cpp", encoding_format="base64")
    raw = base64.b64decode(encoded.data[0].embedding)
    floats = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert floats == pytest.approx(single.data[0].embedding, abs=1e-6)


def test_embeddings_unsupported_names_the_flag(
    rerank_client: LlamaCppClient, client: LlamaCppClient
) -> None:
    with pytest.raises(NotSupportedError) as info:
        client.rerank("q", ["a", "b"])
    assert info.value.status_code == 501
    assert "--reranking" in info.value.message


# --- tokens ----------------------------------------------------------------------------


def test_tokenize_detokenize_round_trip(client: LlamaCppClient, tiny_files: TinyModelFiles) -> None:
    text = "Hello, world! Ünïcødé 漢字"
    ids = client.tokenize(text)
    assert ids[0] == tiny_files.model.bos_token_id
    assert all(isinstance(i, int) and 0 <= i < tiny_files.model.n_vocab for i in ids)
    assert client.tokenize(text, add_special=False) == ids[1:]
    assert client.detokenize(ids[1:]).strip() == text
    pieces = client.tokenize(text, with_pieces=True)
    assert [p["id"] for p in pieces] == ids
    assert client.tokenize("", add_special=False) == []


def test_detokenize_spec_ids(client: LlamaCppClient) -> None:
    text = client.detokenize([1, 22557, 29892, 3186, 29991])
    assert text.startswith("<s>") and len(text) > 3


def test_out_of_vocab_id_is_a_server_error_with_its_message(chat_server: ServerManager) -> None:
    with LlamaCppClient(chat_server.url, max_retries=0) as client:
        with pytest.raises(Exception) as info:
            client.detokenize([10**6])
    assert getattr(info.value, "status_code", None) in (400, 500)
    assert "1000000" in str(info.value)


# --- rerank ----------------------------------------------------------------------------


def test_rerank_sorted_with_both_score_names(rerank_client: LlamaCppClient) -> None:
    documents = [
        "Flash attention is a memory-efficient attention algorithm.",
        "CUDA is a parallel computing platform by NVIDIA.",
        "Attention mechanisms are core to transformer models.",
        "Python is a popular programming language.",
    ]
    results = rerank_client.rerank(query="What is flash attention?", documents=documents)
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(r["score"] == r["relevance_score"] for r in results)
    assert "document" not in results[0]
    top = rerank_client.rerank(
        "What is flash attention?", documents, top_n=2, return_documents=True
    )
    assert [r["index"] for r in top] == [r["index"] for r in results[:2]]
    assert [r["document"] for r in top] == [documents[r["index"]] for r in top]
    again = rerank_client.rerank(query="What is flash attention?", documents=documents)
    assert [r["index"] for r in again] == [r["index"] for r in results]


# --- models, props, slots ----------------------------------------------------------------


def test_models_list_and_props(
    client: LlamaCppClient, chat_server: ServerManager, tiny_files: TinyModelFiles
) -> None:
    models = client.models.list()
    assert len(models) == 1 and isinstance(models[0], dict)
    assert Path(models[0].get("id")).name == Path(chat_server.options.model_path).name
    assert models[0]["meta"]["n_embd"] == tiny_files.model.n_embd
    assert models[0]["meta"]["n_vocab"] == tiny_files.model.n_vocab
    props = client.props.get()
    assert props["total_slots"] == 4
    assert "<|im_start|>" in props["chat_template"]


def test_slots_list_normalized_and_processing(
    client: LlamaCppClient, chat_server: ServerManager
) -> None:
    wait_until_idle(chat_server)
    slots = client.slots.list()
    assert [s["id"] for s in slots] == [0, 1, 2, 3]
    assert all(s["state"] == "idle" and s["is_processing"] is False for s in slots)
    assert all("n_ctx" in s for s in slots)  # raw fields kept
    stream = client.chat.completions.create(messages=MESSAGES, max_tokens=1500, stream=True)
    next(stream)
    next(stream)
    busy = [s for s in client.slots.list() if s["state"] == "processing"]
    stream.close()
    assert len(busy) == 1 and busy[0]["is_processing"] is True


def test_slot_save_restore_erase(client: LlamaCppClient, chat_server: ServerManager) -> None:
    greedy(client, max_tokens=2, id_slot=1)
    saved = client.slots.save(1, "slot1.bin")
    assert saved["id_slot"] == 1 and saved["n_written"] > 0
    assert (Path(chat_server.options.slot_save_path) / "slot1.bin").exists()
    restored = client.slots.restore(2, "slot1.bin")
    assert restored["id_slot"] == 2 and restored["n_read"] == saved["n_written"]
    erased = client.slots.erase(2)
    assert erased["id_slot"] == 2
    with pytest.raises(ValueError, match="bare file name"):
        client.slots.save(0, "../escape.bin")


# --- LoRA ------------------------------------------------------------------------------


def first_logprobs(client: LlamaCppClient) -> list[tuple[str, float]]:
    response = greedy(client, max_tokens=1, logprobs=True, top_logprobs=5, cache_prompt=False)
    top = response.choices[0].logprobs["content"][0]["top_logprobs"]
    return [(t["token"], round(t["logprob"], 4)) for t in top]


def test_lora_list_set_scales_apply(
    client: LlamaCppClient, tiny_files: TinyModelFiles, chat_server: ServerManager
) -> None:
    adapters = client.lora.list()
    assert len(adapters) == 1 and adapters[0]["id"] == 0
    path = adapters[0]["path"]
    try:
        base = client.lora.set_scales({0: 0.0})
        assert base[0]["scale"] == 0.0
        plain = first_logprobs(client)
        assert first_logprobs(client) == plain
        changed = client.lora.apply(path, scale=4.0)
        assert changed[0]["scale"] == 4.0 and client.lora.list()[0]["scale"] == 4.0
        assert first_logprobs(client) != plain  # the adapter really changes the model
        with pytest.raises(ValueError, match="not loaded on the server"):
            client.lora.apply("/nowhere/adapter.gguf")
        with pytest.raises(ValueError, match="no LoRA adapter with id"):
            client.lora.set_scales({7: 1.0})
    finally:
        client.lora.set_scales({0: 1.0})
    assert client.lora.list()[0]["scale"] == 1.0


# --- health and metrics ----------------------------------------------------------------


def test_health(client: LlamaCppClient) -> None:
    assert client.health.check() == {"status": "ok"}
    assert client.health.wait_until_ready(timeout=5) == {"status": "ok"}


def test_metrics_rise_after_a_call(client: LlamaCppClient, chat_server: ServerManager) -> None:
    wait_until_idle(chat_server)  # no earlier generation still adding to the counters
    text = client.metrics.get()
    assert "# TYPE llamacpp:prompt_tokens_total counter" in text
    before = client.metrics.values()
    response = greedy(client, max_tokens=9, cache_prompt=False)
    after = client.metrics.values()
    predicted = "llamacpp:tokens_predicted_total"
    assert after[predicted] - before[predicted] == 9
    prompt_delta = after["llamacpp:prompt_tokens_total"] - before["llamacpp:prompt_tokens_total"]
    assert prompt_delta == response.timings.prompt_n
    samples = client.metrics.parse()
    names = {s.name for s in samples}
    assert {"llamacpp:prompt_tokens_total", "llamacpp:requests_processing"} <= names


# --- auth ------------------------------------------------------------------------------


def test_api_key_enforced(key_server: ServerManager) -> None:
    with LlamaCppClient(key_server.url, max_retries=3) as anonymous:
        assert anonymous.health.check() == {"status": "ok"}
        with pytest.raises(AuthenticationError) as info:
            anonymous.chat_completion(messages=MESSAGES, max_tokens=1)
        assert info.value.status_code == 401
        assert info.value.type == "authentication_error"
    with LlamaCppClient(key_server.url, api_key=API_KEY) as client:
        assert client.chat_completion(messages=MESSAGES, max_tokens=1).usage.completion_tokens == 1
        assert API_KEY not in repr(client)
    with LlamaCppClient(key_server.url, api_key="wrong") as wrong:
        with pytest.raises(AuthenticationError):
            wrong.tokenize("x")
    manager_client = key_server.client()
    assert manager_client.tokenize("x", add_special=False)
    manager_client.close()


def test_server_400_carries_server_message(client: LlamaCppClient) -> None:
    with pytest.raises(BadRequestError) as info:
        client.chat_completion(messages=MESSAGES, max_tokens=1, response_format={"type": "bogus"})
    assert info.value.status_code == 400
    assert info.value.message and info.value.type == "invalid_request_error"


def test_connection_errors_are_requests_errors(chat_server: ServerManager) -> None:
    client = LlamaCppClient("http://127.0.0.1:9", max_retries=0)
    with pytest.raises(requests.ConnectionError):
        client.tokenize("x")
    client.close()
    assert client.is_closed
