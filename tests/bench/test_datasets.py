"""Dataset files in the shapes they come in (JSONL under other tools' field names, ShareGPT
lines, Parquet), read whole and checked before a run, each request's output length taken
from the dataset; and a run from a Parquet dataset asks the server for exactly those
lengths (the exact-time server writes as many tokens as it is asked for)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llamatelemetry.bench import BenchConfig, BenchConfigError, Prompt, Workload, load_prompts_file
from llamatelemetry.bench._prompts import OUTPUT_LENGTH_FIELDS
from llamatelemetry.server import ServerManager

from .test_load import ok_json

CONVERSATION = [
    {"from": "system", "value": "Be brief."},
    {"from": "human", "value": "What is a GGUF file?"},
    {"from": "gpt", "value": "x" * 40},  # about 10 tokens
]


def jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("field", OUTPUT_LENGTH_FIELDS)
def test_an_output_length_under_any_tool_s_name_is_the_request_s(
    tmp_path: Path, field: str
) -> None:
    [item] = load_prompts_file(jsonl(tmp_path / "d.jsonl", [{"prompt": "hi", field: 7}]))
    assert item == Prompt([{"role": "user", "content": "hi"}], 7)
    with pytest.raises(ValueError, match=rf"d.jsonl:1: {field} must be a whole number"):
        load_prompts_file(jsonl(tmp_path / "d.jsonl", [{"prompt": "hi", field: 0}]))


def test_sharegpt_conversations_one_a_line(tmp_path: Path) -> None:
    rows = [{"conversations": CONVERSATION}, {"conversations": [CONVERSATION[0]]},
            {"conversations": CONVERSATION, "output_len": 3}]  # fmt: skip
    first, second = load_prompts_file(jsonl(tmp_path / "s.jsonl", rows))
    question = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is a GGUF file?"}]  # fmt: skip
    assert first == Prompt(question, 10)  # the answer's length, about 4 characters a token
    assert second == Prompt(question, 3)  # the line's own length wins
    with pytest.raises(ValueError, match="s.jsonl:1 has a turn that is not"):
        load_prompts_file(jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "x"}]}]))


def test_a_parquet_dataset_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({
        "prompt": ["one", "two", "three"], "output_tokens": [5, None, 9],
    }), path)  # fmt: skip
    assert load_prompts_file(path) == [
        Prompt([{"role": "user", "content": "one"}], 5),
        [{"role": "user", "content": "two"}],
        Prompt([{"role": "user", "content": "three"}], 9),
    ]
    sharegpt = tmp_path / "s.parquet"
    pq.write_table(pa.table({"conversations": [CONVERSATION, CONVERSATION]}), sharegpt)
    assert [p.max_tokens for p in load_prompts_file(sharegpt)] == [10, 10]  # type: ignore[union-attr]
    pq.write_table(pa.table({"prompt": ["ok", None]}), path)
    with pytest.raises(ValueError, match="d.parquet: row 2: expected"):
        load_prompts_file(path)
    (tmp_path / "not.parquet").write_text("plain text")
    with pytest.raises(ValueError, match="not.parquet: not a Parquet file"):
        load_prompts_file(tmp_path / "not.parquet")


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["one"]}), path)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if not installed
    with pytest.raises(BenchConfigError, match=r"pip install 'llamatelemetry\[parquet\]'"):
        BenchConfig(prompts_file=path)


def test_a_run_from_a_parquet_dataset_asks_for_its_lengths(tmp_path: Path) -> None:
    from llamatelemetry.testing._exact_server import ExactTimeServer

    path = tmp_path / "d.parquet"
    lengths = [3, 5, 2, 7]
    pq.write_table(pa.table({"prompt": [f"q{i}" for i in range(4)], "output_len": lengths}), path)
    with ExactTimeServer(ttft=0.0, itl=0.0) as server:
        data = ok_json("--url", server.url, "--prompts-file", str(path), "-n", "4",
                       "--max-tokens", "100", "--warmup", "0",
                       "--scrape-interval", "0")  # fmt: skip
    [run] = data["runs"]
    assert [r["output_tokens"] for r in run["per_request"]] == lengths


def test_a_dataset_of_lengths_alone(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "l.jsonl", [{"input_length": 100, "output_length": 20},
                                        {"prompt_tokens": 50, "timestamp": 1.5}])  # fmt: skip
    assert load_prompts_file(path) == [Prompt([], 20, None, tokens=100),
                                       Prompt([], None, 1.5, tokens=50)]  # fmt: skip
    with pytest.raises(ValueError, match="l.jsonl:1: prompt_tokens must be a whole number"):
        load_prompts_file(jsonl(tmp_path / "l.jsonl", [{"prompt_tokens": -3}]))
    with pytest.raises(ValueError, match="has no text yet: make it with with_lengths_made"):
        Workload([Prompt([], 5, tokens=10)])


def test_a_run_from_lengths_alone_sends_prompts_of_those_lengths(
    chat_server: ServerManager, tmp_path: Path
) -> None:
    """The text is made at run time, calibrated with the server's own tokenizer and chat
    template: the server counts about the lengths the dataset gave."""
    rows = [{"prompt_tokens": 64, "output_tokens": 3}, {"prompt_tokens": 160, "output_tokens": 5}]
    path = jsonl(tmp_path / "l.jsonl", rows)
    data = ok_json("--url", chat_server.url, "--prompts-file", str(path), "-n", "4",
                   "--seed", "2", "--warmup", "0", "--scrape-interval", "0")  # fmt: skip
    [run] = data["runs"]
    assert run["completed"] == 4
    for request, row in zip(run["per_request"], rows * 2, strict=True):
        assert request["output_tokens"] == row["output_tokens"]
        assert abs(request["prompt_tokens"] - row["prompt_tokens"]) <= 0.12 * row["prompt_tokens"]
