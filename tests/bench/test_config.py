"""`BenchConfig` from Python: every rule between settings refuses what breaks it with a
`BenchConfigError` naming what to fix, a configuration that keeps the rules is made, and
the command line prints each refusal worded with its flags, as it did before the rules
moved out of it. No server is needed: nothing here sends a request."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamatelemetry.bench import SLO, BenchConfig, BenchConfigError

from .test_load import dead_url, invoke

MODEL = Path("model.gguf")  # never started here: making a config reads no model
TTFT = SLO(ttft=0.5)
E2E = SLO(e2e=2.0)


def trace(tmp_path: Path, timestamps: bool = True) -> Path:
    path = tmp_path / ("trace.jsonl" if timestamps else "prompts.jsonl")
    stamp = ', "timestamp": {}'
    path.write_text("".join(
        f'{{"prompt": "request {i}"{stamp.format(10 + i) if timestamps else ""}}}\n'
        for i in range(3)
    ))  # fmt: skip
    return path


def refused(**settings: Any) -> BenchConfigError:
    with pytest.raises(BenchConfigError) as caught:
        BenchConfig(**settings)
    return caught.value


# -- each rule between settings: broken, it is refused naming what to fix --------------------

RULES: list[tuple[dict[str, Any], str, tuple[str, ...]]] = [
    (
        {"url": "http://127.0.0.1:9", "model": MODEL},
        "url and model: use one (model starts its own server)",
        ("url", "model"),
    ),
    (
        {"api_key": "k", "model": MODEL},
        "api_key is for the server at url: the one model starts has none",
        ("api_key", "url", "model"),
    ),
    (
        {"ctx_size": 4096},
        "ctx_size and threads are for the server model starts",
        ("ctx_size", "threads", "model"),
    ),
    (
        {"threads": 2},
        "ctx_size and threads are for the server model starts",
        ("ctx_size", "threads", "model"),
    ),
    ({"duration": 5.0}, "duration is for open-loop runs: add rates", ("duration", "rates")),
    ({"ramp_up": 1.0}, "ramp_up is for open-loop runs: add rates", ("ramp_up", "rates")),
    ({"burstiness": 0.5}, "burstiness is for open-loop runs: add rates", ("burstiness", "rates")),
    (
        {"max_concurrency": 2},
        "max_concurrency is for open-loop runs: add rates",
        ("max_concurrency", "rates"),
    ),
    # a search by concurrency has no schedule either
    (
        {"duration": 5.0, "find_capacity": "concurrency", "slo": E2E},
        "duration is for open-loop runs: add rates",
        ("duration", "rates"),
    ),
    (
        {"rates": [1e5], "duration": 1e6},
        "rates 100000: 100000 requests per second for 1e+06 s is about 1e+11 requests",
        ("rates",),
    ),
    (
        {"find_capacity": "rate"},
        "find_capacity searches for the highest load meeting slo: add slo",
        ("find_capacity", "slo"),
    ),
    (
        {"find_capacity": "concurrency"},
        "find_capacity searches for the highest load meeting slo: add slo",
        ("find_capacity", "slo"),
    ),
    (
        {"slo": TTFT, "stream": False},
        "slo with ttft or tpot needs streamed answers: drop stream=False",
        ("slo", "no_stream"),
    ),
    (
        {"slo": SLO(tpot=0.05), "stream": False},
        "slo with ttft or tpot needs streamed answers: drop stream=False",
        ("slo", "no_stream"),
    ),
    (
        {"replay": True},
        "replay sends a prompts_file trace as recorded: give prompts_file, and no "
        "concurrency, rates or find_capacity",
        ("replay", "prompts_file", "concurrency", "rates", "find_capacity"),
    ),
    (
        {"concurrency": ()},
        "nothing to run: give concurrency, rates, replay or find_capacity",
        ("concurrency", "rates", "replay", "find_capacity"),
    ),
]


@pytest.mark.parametrize(("settings", "message", "names"), RULES)
def test_a_rule_broken_is_refused_naming_what_to_fix(
    settings: dict[str, Any], message: str, names: tuple[str, ...]
) -> None:
    error = refused(**settings)
    assert isinstance(error, ValueError)  # what code catching bad arguments expects
    assert str(error).startswith(message)
    assert error.settings == names


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prompt_tokens": 64}, "prompt_tokens and prompts_file: use one"),
        ({"shared_prefix": 8}, "shared_prefix is for synthetic prompts, not prompts_file"),
        ({"length_spread": 0.2}, "length_spread is for synthetic prompts, not prompts_file"),
        ({"replay": True, "rates": [1.0]}, "replay sends a prompts_file trace as recorded"),
        ({"replay": True, "concurrency": [2]}, "replay sends a prompts_file trace as recorded"),
        (
            {"replay": True, "find_capacity": "rate", "slo": E2E},
            "replay sends a prompts_file trace as recorded",
        ),  # fmt: skip
    ],
)
def test_a_prompts_file_rule_broken_is_refused_before_the_file_is_read(
    settings: dict[str, Any], message: str, tmp_path: Path
) -> None:
    unreadable = tmp_path / "not-jsonl.txt"
    unreadable.write_text("this is no JSON\n")
    assert str(refused(prompts_file=unreadable, **settings)).startswith(message)


def test_a_replay_needs_every_request_s_timestamp(tmp_path: Path) -> None:
    error = refused(prompts_file=trace(tmp_path, timestamps=False), replay=True)
    assert str(error) == "replay: every line of prompts_file needs its 'timestamp'"
    # the same file without a replay is fine: its prompts are sent as fast as asked
    assert BenchConfig(prompts_file=trace(tmp_path, timestamps=False)).file_prompts


def test_a_bad_prompts_file_is_refused_naming_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    error = refused(prompts_file=bad)
    assert str(error).startswith(f"prompts_file: {bad}:2") and error.settings == ("prompts_file",)
    missing = refused(prompts_file=tmp_path / "gone.jsonl")
    assert "gone.jsonl" in str(missing) and "No such file" in str(missing)


# -- each setting on its own -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"requests": 0}, "requests"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2**31}, "max_tokens"),
        ({"warmup": -1}, "warmup"),
        ({"turns": 101}, "turns"),
        ({"repeat": 0}, "repeat"),
        ({"prompt_tokens": 0}, "prompt_tokens"),
        ({"concurrency": [1, 0]}, "concurrency"),
        ({"concurrency": [5000]}, "concurrency"),
        ({"rates": [0.0]}, "rates"),
        ({"rates": [math.nan]}, "rates"),
        ({"rates": [math.inf]}, "rates"),
        ({"timeout": 0.0}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"temperature": -0.5}, "temperature"),
        ({"rates": [1.0], "duration": math.nan}, "duration"),
        ({"rates": [1.0], "ramp_up": -1.0}, "ramp_up"),
        ({"scrape_interval": math.nan}, "scrape_interval"),
        ({"length_spread": 1.0}, "length_spread"),
        ({"rates": [1.0], "burstiness": 0.001}, "burstiness"),
        ({"find_capacity": "speed", "slo": E2E}, "find_capacity"),
        ({"model": MODEL, "threads": 0}, "threads"),
    ],
)
def test_a_value_a_setting_cannot_take_is_refused(settings: dict[str, Any], name: str) -> None:
    error = refused(**settings)
    assert error.settings == (name,), str(error)
    assert str(error).startswith(name)


# -- configurations that keep every rule -----------------------------------------------------


def test_the_default_is_one_request_at_a_time_against_the_default_server() -> None:
    config = BenchConfig()
    assert config.target == "http://127.0.0.1:8080"
    assert (config.levels, config.rates, config.requests_per_run) == ((1,), (), 32)
    assert config.synthetic_tokens == 128 and config.file_prompts is None
    assert config.to_dict()["concurrency"] == [1] and config.to_dict()["prompt_tokens"] == 128


@pytest.mark.parametrize(
    "settings",
    [
        {"model": MODEL, "ctx_size": 4096, "threads": 2},
        {"concurrency": [1, 2, 4], "rates": [0.5, 2.0], "duration": 10.0, "ramp_up": 2.0,
         "burstiness": 0.5, "max_concurrency": 8},
        # a search by rate without rates starts at 1 req/s: its schedule's settings count
        {"find_capacity": "rate", "slo": TTFT, "duration": 5.0, "burstiness": 2.0},
        {"find_capacity": "concurrency", "slo": TTFT, "concurrency": [2]},
        {"slo": E2E, "stream": False},  # end-to-end latency needs no stream
        {"prompt_tokens": 64, "shared_prefix": 32, "length_spread": 0.5, "turns": 3},
        {"concurrency": [4], "ramp_up": 0.0, "burstiness": 1.0},  # the defaults, given
    ],
)  # fmt: skip
def test_a_configuration_keeping_the_rules_is_made(settings: dict[str, Any]) -> None:
    BenchConfig(**settings)


def test_what_runs_when_nothing_else_says(tmp_path: Path) -> None:
    assert BenchConfig(rates=[2.0]).levels == ()  # rates alone: no closed-loop run
    assert BenchConfig(rates=[2.0], concurrency=[1]).levels == (1,)
    assert BenchConfig(find_capacity="rate", slo=TTFT).levels == ()
    replay = BenchConfig(prompts_file=trace(tmp_path), replay=True, requests=5)
    assert replay.levels == () and replay.requests_per_run == 3  # the whole trace, once
    assert replay.to_dict()["requests"] == 3 and replay.to_dict()["prompt_tokens"] is None


def test_a_configuration_is_frozen_and_replace_checks_again() -> None:
    config = BenchConfig(rates=[1.0], duration=5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.duration = 1.0  # type: ignore[misc]
    assert dataclasses.replace(config, rates=[2.0]).rates == (2.0,)
    with pytest.raises(BenchConfigError, match="add rates"):
        dataclasses.replace(config, rates=[])
    assert config == BenchConfig(rates=(1.0,), duration=5.0) and hash(config)


def test_an_error_words_its_settings_as_asked() -> None:
    error = refused(replay=True, concurrency=[2])
    flags = {"concurrency": "-c", "rates": "--rate"}
    worded = error.worded(lambda name: flags.get(name, "--" + name.replace("_", "-")))
    assert worded == (
        "--replay sends a --prompts-file trace as recorded: give --prompts-file, "
        "and no -c, --rate or --find-capacity"
    )


# -- any settings: a config, or a BenchConfigError naming real settings ----------------------

FIELDS = {f.name for f in dataclasses.fields(BenchConfig) if f.init} | {"no_stream"}


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "url": st.just("http://127.0.0.1:9"),
            "api_key": st.just("key"),
            "model": st.just(MODEL),
            "ctx_size": st.integers(-1, 10_000),
            "threads": st.integers(-1, 8),
            "requests": st.integers(-1, 100),
            "concurrency": st.lists(st.integers(-1, 5000), max_size=3),
            "prompt_tokens": st.integers(-1, 1000),
            "max_tokens": st.integers(-1, 2**31),
            "warmup": st.integers(-1, 3),
            "timeout": st.floats(allow_nan=True, allow_infinity=True),
            "rates": st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
            "burstiness": st.floats(allow_nan=True, allow_infinity=True),
            "duration": st.floats(allow_nan=True, allow_infinity=True),
            "ramp_up": st.floats(allow_nan=True, allow_infinity=True),
            "max_concurrency": st.integers(-1, 10),
            "shared_prefix": st.integers(-1, 100),
            "slo": st.sampled_from([TTFT, E2E]),
            "find_capacity": st.sampled_from(["rate", "concurrency", "speed"]),
            "stream": st.booleans(),
            "scrape_interval": st.floats(allow_nan=True, allow_infinity=True),
            "turns": st.integers(0, 101),
            "replay": st.booleans(),
            "length_spread": st.floats(allow_nan=True, allow_infinity=True),
            "repeat": st.integers(0, 101),
        },
    )
)
def test_any_settings_make_a_config_or_say_what_to_fix(settings: dict[str, Any]) -> None:
    try:
        config = BenchConfig(**settings)
    except BenchConfigError as error:
        assert error.settings and set(error.settings) <= FIELDS, str(error)
        assert str(error) and "{" not in str(error)
        return
    assert config.levels or config.open_loop  # something to run
    assert all(1 <= level <= 4096 for level in config.levels)
    for rate in config.rates:
        config.arrivals(rate)  # every schedule of the run can be planned
    assert not (config.replay and config.prompts_file is None)
    assert config.slo is not None or config.find_capacity is None


# -- the command line prints each refusal as it did ------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:9", "--model", "m.gguf"],
         "--url and --model: use one (--model starts its own server)"),
        (["--ctx-size", "4096"], "--ctx-size and --threads are for the server --model starts"),
        (["--duration", "5"], "--duration is for open-loop runs: add --rate"),
        (["--ramp-up", "1"], "--ramp-up is for open-loop runs: add --rate"),
        (["--burstiness", "0.5"], "--burstiness is for open-loop runs: add --rate"),
        (["--max-concurrency", "2"], "--max-concurrency is for open-loop runs: add --rate"),
        (["--rate", "100000", "--duration", "1000000"], "--rate 100000: 100000 requests per "
         "second for 1e+06 s is about 1e+11 requests"),
        (["--find-capacity", "rate"],
         "--find-capacity searches for the highest load meeting --slo: add --slo"),
        (["--slo", "ttft=1s", "--no-stream"],
         "--slo with ttft or tpot needs streamed answers: drop --no-stream"),
        (["--replay", "-c", "2"], "--replay sends a --prompts-file trace as recorded: give "
         "--prompts-file, and no -c, --rate or --find-capacity"),
        (["--slo-attainment", "0.5"],
         "--slo-attainment is the share of requests meeting --slo: add --slo"),
    ],
)  # fmt: skip
def test_the_command_line_words_each_refusal_with_its_flags(args: list[str], message: str) -> None:
    result = invoke(*args) if "--url" in args else invoke("--url", dead_url(), *args)
    assert result.exit_code == 1, result.output
    assert f"Error: {message}" in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt-tokens", "8"], "--prompt-tokens and --prompts-file: use one"),
        (["--shared-prefix", "8"], "--shared-prefix is for synthetic prompts, not --prompts-file"),
        (["--length-spread", "0.2"],
         "--length-spread is for synthetic prompts, not --prompts-file"),
        (["--replay"], "--replay: every line of --prompts-file needs its 'timestamp'"),
    ],
)  # fmt: skip
def test_the_command_line_words_the_prompts_file_rules_with_its_flags(
    args: list[str], message: str, tmp_path: Path
) -> None:
    prompts = trace(tmp_path, timestamps=False)
    result = invoke("--url", dead_url(), "--prompts-file", str(prompts), *args)
    assert result.exit_code == 1, result.output
    assert f"Error: {message}" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("percentiles", "says"),
    [((), "give at least one"), ((50, 120), "120 is not a percentile"),
     ((99, 99.0), "given twice"), ((True,), "True is not a percentile")],
)  # fmt: skip
def test_percentiles_are_checked_when_the_config_is_made(
    percentiles: tuple[float, ...], says: str
) -> None:
    with pytest.raises(BenchConfigError, match=says) as caught:
        BenchConfig(percentiles=percentiles)
    assert caught.value.settings == ("percentiles",)


@pytest.mark.parametrize("workers", [0, 257, "many", 2.5, True])
def test_workers_are_checked_when_the_config_is_made(workers: object) -> None:
    with pytest.raises(BenchConfigError, match="workers"):
        BenchConfig(workers=workers)  # type: ignore[arg-type]
