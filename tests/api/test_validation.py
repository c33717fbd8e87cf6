"""Bad input to every public call: a clear TypeError/ValueError naming the argument, and
not one byte sent.

Each case runs against a FaultServer that records every request; the client has
``max_retries=0``, so a request that slips through shows up as ``server.requests`` (and as a
500 "should not be reached" error instead of the expected exception). Wrong type →
TypeError, wrong value → ValueError. The last part shows that valid edge values are *not*
refused and reach the server as given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.api._validation import MAX_TOKEN_IDS
from llamatelemetry.testing._fault_server import FaultServer, Reply, SeenRequest

NAN, INF = math.nan, math.inf
MESSAGES = [{"role": "user", "content": "hi"}]
# A lone surrogate: what bytes decoded with errors="surrogateescape" leave behind.
BAD_SURROGATE = "ok \udcff"

Call = Callable[[LlamaCppClient, str], Any]  # (client, server url) -> whatever the call returns


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMA_BASE_URL", raising=False)
    monkeypatch.delenv("LLAMA_API_KEY", raising=False)


# --- the table ------------------------------------------------------------------------

CASES: list[Any] = []


def case(id: str, call: Call, error: type[Exception], match: str) -> None:
    CASES.append(pytest.param(call, error, match, id=id))


# Generation endpoints share the sampling parameters: every sampling case runs on each.
GENERATORS: dict[str, Callable[..., Any]] = {
    "chat": lambda c, **kw: c.chat.completions.create(MESSAGES, **kw),
    "chat_completion": lambda c, **kw: c.chat_completion(messages=MESSAGES, **kw),
    "completions": lambda c, **kw: c.completions.create("Once upon", **kw),
    "complete": lambda c, **kw: c.complete("Once upon", **kw),
    "infill": lambda c, **kw: c.infill("def f(", "):", **kw),
}
OPENAI_GENERATORS = ("chat", "chat_completion", "completions")  # where max_tokens=0 is refused

FLOAT_PARAMS = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",  # named parameters
    "min_p",
    "typical_p",
    "repeat_penalty",
    "dynatemp_range",
    "dynatemp_exponent",  # extras
    "mirostat_tau",
    "mirostat_eta",
    "xtc_probability",
    "xtc_threshold",
    "top_n_sigma",
    "dry_multiplier",
    "dry_base",
)

# (label, keyword arguments, error, match)
SAMPLING_CASES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    *[
        (f"{name}-{label}", {name: value}, ValueError, rf"^{name} must be a finite number")
        for name in FLOAT_PARAMS
        for label, value in (("nan", NAN), ("inf", INF), ("-inf", -INF))
    ],
    (
        "temperature-int-too-big-for-float",
        {"temperature": 10**400},
        ValueError,
        "temperature must be a finite number",
    ),
    ("temperature-negative", {"temperature": -1}, ValueError, r"temperature must be >= 0"),
    ("temperature-str", {"temperature": "0.7"}, TypeError, "temperature must be a number"),
    ("temperature-bool", {"temperature": True}, TypeError, "temperature must be a number"),
    ("top_p-1.5", {"top_p": 1.5}, ValueError, r"top_p must be <= 1"),
    ("top_p-negative", {"top_p": -0.1}, ValueError, r"top_p must be >= 0"),
    ("frequency_penalty-3", {"frequency_penalty": 3}, ValueError, "frequency_penalty must be <= 2"),
    ("presence_penalty--3", {"presence_penalty": -3}, ValueError, "presence_penalty must be >= -2"),
    ("presence_penalty-list", {"presence_penalty": [0.1]}, TypeError, "presence_penalty must be"),
    ("min_p-1.5", {"min_p": 1.5}, ValueError, "min_p must be <= 1"),
    (
        "repeat_penalty-negative",
        {"repeat_penalty": -1.0},
        ValueError,
        "repeat_penalty must be >= 0",
    ),
    ("repeat_penalty-str", {"repeat_penalty": "1.1"}, TypeError, "repeat_penalty must be a number"),
    ("max_tokens--2", {"max_tokens": -2}, ValueError, r"max_tokens must be >= -1"),
    ("max_tokens-2**31", {"max_tokens": 2**31}, ValueError, r"max_tokens must be <= 2147483647"),
    ("max_tokens-bool", {"max_tokens": True}, TypeError, "max_tokens must be an int"),
    ("max_tokens-float", {"max_tokens": 16.0}, TypeError, "max_tokens must be an int"),
    ("max_tokens-str", {"max_tokens": "16"}, TypeError, "max_tokens must be an int"),
    ("top_k-negative", {"top_k": -1}, ValueError, "top_k must be >= 0"),
    ("top_k-bool", {"top_k": False}, TypeError, "top_k must be an int"),
    ("seed-bool", {"seed": True}, TypeError, "seed must be an int"),
    ("seed--2", {"seed": -2}, ValueError, "seed must be >= -1"),
    ("seed-2**32", {"seed": 2**32}, ValueError, "seed must be <= 4294967295"),
    ("stop-int", {"stop": 5}, TypeError, "stop must be a str or a list of str"),
    ("stop-dict", {"stop": {"x": 1}}, TypeError, "stop must be a str or a list of str"),
    ("stop-bytes", {"stop": b"\n"}, TypeError, "stop must be a str or a list of str"),
    ("stop-item-int", {"stop": ["x", 5]}, TypeError, r"stop\[1\] must be a str"),
    ("stop-item-empty", {"stop": [""]}, ValueError, r"stop\[0\] must not be empty"),
    ("stop-surrogate", {"stop": BAD_SURROGATE}, ValueError, r"stop\[0\] is not valid UTF-8"),
    ("stream-str", {"stream": "yes"}, TypeError, "stream must be True or False"),
    ("stream-int", {"stream": 1}, TypeError, "stream must be True or False"),
    ("n_probs-bool", {"n_probs": True}, TypeError, "n_probs must be an int"),
    ("n_probs-negative", {"n_probs": -1}, ValueError, "n_probs must be >= 0"),
    ("n_predict-float", {"n_predict": 1.5}, TypeError, "n_predict must be an int"),
    ("mirostat-3", {"mirostat": 3}, ValueError, "mirostat must be <= 2"),
    ("cache_prompt-str", {"cache_prompt": "yes"}, TypeError, "cache_prompt must be True or False"),
    ("json_schema-str", {"json_schema": "{}"}, TypeError, "json_schema must be a dict"),
    ("response_format-list", {"response_format": []}, TypeError, "response_format must be a dict"),
    ("grammar-int", {"grammar": 5}, TypeError, "grammar must be a str"),
    ("grammar-empty", {"grammar": ""}, ValueError, "grammar must not be empty"),
    ("tools-str", {"tools": "get_weather"}, TypeError, "tools must be a list"),
    ("tools-dict", {"tools": {"type": "function"}}, TypeError, "tools must be a list"),
    (
        "tools-nan-inside",
        {"tools": [{"type": "function", "x": INF}]},
        ValueError,
        r"tools\[0\]\['x'\] is inf",
    ),
    ("logit_bias-str", {"logit_bias": "15:1"}, TypeError, "logit_bias must be a dict"),
    ("logit_bias-nan-value", {"logit_bias": {"15": NAN}}, ValueError, r"logit_bias\['15'\] is nan"),
    (
        "unknown-extra-nan",
        {"my_param": NAN},
        ValueError,
        r"^my_param is nan, which JSON cannot carry",
    ),
    (
        "unknown-extra-inf-nested",
        {"my_param": {"a": [1.0, -INF]}},
        ValueError,
        r"my_param\['a'\]\[1\] is -inf",
    ),
    (
        "unknown-extra-object",
        {"my_param": object()},
        TypeError,
        r"^my_param has type object, which JSON cannot carry",
    ),
    ("unknown-extra-set", {"my_param": {1, 2}}, TypeError, r"^my_param has type set"),
    (
        "unknown-extra-tuple-key",
        {"my_param": {(1, 2): 3}},
        TypeError,
        r"^my_param has a key of type tuple",
    ),
    (
        "unknown-extra-surrogate",
        {"my_param": BAD_SURROGATE},
        ValueError,
        "my_param is not valid UTF-8",
    ),
    ("timeout-negative", {"timeout": -1}, ValueError, "timeout must be a positive"),
    ("timeout-str", {"timeout": "5"}, TypeError, "timeout must be seconds as a number"),
]

for endpoint, generate in GENERATORS.items():
    for label, kwargs, error, match in SAMPLING_CASES:
        case(f"{endpoint}-{label}", lambda c, u, g=generate, kw=kwargs: g(c, **kw), error, match)
for endpoint in OPENAI_GENERATORS:
    case(
        f"{endpoint}-max_tokens-0",
        lambda c, u, g=GENERATORS[endpoint]: g(c, max_tokens=0),
        ValueError,
        r"max_tokens must be a positive number of tokens \(or -1",
    )

# Chat messages: chat.completions.create, chat_completion and apply_template check them alike.
MESSAGE_CASES: list[tuple[str, Any, type[Exception], str]] = [
    ("str", "hi", TypeError, "messages must be a list of"),
    ("dict", {"role": "user", "content": "hi"}, TypeError, "messages must be a list of"),
    ("none", None, TypeError, "messages must be a list of"),
    (
        "generator",
        ({"role": "user", "content": "hi"} for _ in range(1)),
        TypeError,
        "messages must be a list of",
    ),
    ("empty", [], ValueError, "messages must contain at least one message"),
    ("empty-tuple", (), ValueError, "messages must contain at least one message"),
    ("item-str", ["hi"], TypeError, r"messages\[0\] must be a dict"),
    ("item-none", [None], TypeError, r"messages\[0\] must be a dict"),
    ("no-role", [{"content": "hi"}], ValueError, r"messages\[0\] has no 'role'"),
    (
        "role-int",
        [{"role": 1, "content": "hi"}],
        TypeError,
        r"messages\[0\]\['role'\] must be a str",
    ),
    (
        "unknown-role",
        [{"role": "wizard", "content": "hi"}],
        ValueError,
        r"messages\[0\]\['role'\] is 'wizard'; use one of",
    ),
    (
        "role-wrong-case",
        [{"role": "User", "content": "hi"}],
        ValueError,
        r"messages\[0\]\['role'\] is 'User'",
    ),
    ("no-content", [{"role": "user"}], ValueError, r"messages\[0\] has no 'content'"),
    (
        "no-content-second",
        [*MESSAGES, {"role": "assistant"}],
        ValueError,
        r"messages\[1\] has no 'content'",
    ),
    (
        "content-none-user",
        [{"role": "user", "content": None}],
        ValueError,
        r"messages\[0\]\['content'\] is None",
    ),
    (
        "content-none-assistant-without-tool-calls",
        [{"role": "assistant", "content": None}],
        ValueError,
        r"messages\[0\]\['content'\] is None",
    ),
    (
        "content-int",
        [{"role": "user", "content": 5}],
        TypeError,
        r"messages\[0\]\['content'\] must be a str or a list of content parts",
    ),
    (
        "content-bytes",
        [{"role": "user", "content": b"hi"}],
        TypeError,
        r"messages\[0\]\['content'\] must be a str",
    ),
    (
        "content-dict",
        [{"role": "user", "content": {"type": "text", "text": "hi"}}],
        TypeError,
        r"messages\[0\]\['content'\] must be a str",
    ),
    (
        "content-part-str",
        [{"role": "user", "content": ["hi"]}],
        TypeError,
        r"messages\[0\]\['content'\]\[0\] must be a dict with a 'type'",
    ),
    (
        "content-part-no-type",
        [{"role": "user", "content": [{"text": "hi"}]}],
        TypeError,
        r"messages\[0\]\['content'\]\[0\] must be a dict with a 'type'",
    ),
    (
        "content-text-part-no-text",
        [{"role": "user", "content": [{"type": "text"}]}],
        TypeError,
        r"messages\[0\]\['content'\]\[0\]\['text'\] must be a str",
    ),
    (
        "content-surrogate",
        [{"role": "user", "content": BAD_SURROGATE}],
        ValueError,
        r"messages\[0\]\['content'\] is not valid UTF-8 text \(character 3",
    ),
    (
        "content-part-surrogate",
        [{"role": "user", "content": [{"type": "text", "text": BAD_SURROGATE}]}],
        ValueError,
        r"messages\[0\]\['content'\]\[0\]\['text'\] is not valid UTF-8",
    ),
    (
        "tool-call-arguments-surrogate",
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "1",
                        "type": "function",
                        "function": {"name": "f", "arguments": BAD_SURROGATE},
                    }
                ],
            }
        ],
        ValueError,
        r"messages\[0\]\['tool_calls'\]\[0\]\['function'\]\['arguments'\] is not valid UTF-8",
    ),
    (
        "name-nan",
        [{"role": "user", "content": "hi", "name": NAN}],
        ValueError,
        r"messages\[0\]\['name'\] is nan",
    ),
]
MESSAGE_CALLS: dict[str, Callable[[LlamaCppClient, Any], Any]] = {
    "chat": lambda c, m: c.chat.completions.create(m),
    "chat_completion": lambda c, m: c.chat_completion(messages=m),
    "apply_template": lambda c, m: c.apply_template(m),
}
for endpoint, send in MESSAGE_CALLS.items():
    for label, messages, error, match in MESSAGE_CASES:
        if label == "generator":  # a generator is used up by the first call: make one per case

            def call(c: LlamaCppClient, u: str, send: Any = send) -> Any:
                return send(c, ({"role": "user", "content": "hi"} for _ in range(1)))
        else:

            def call(c: LlamaCppClient, u: str, send: Any = send, m: Any = messages) -> Any:
                return send(c, m)

        case(f"{endpoint}-messages-{label}", call, error, match)

case(
    "chat_completion-no-messages",
    lambda c, u: c.chat_completion(max_tokens=4),
    TypeError,
    "messages",
)
case(
    "chat-model-surrogate",
    lambda c, u: c.chat.completions.create(MESSAGES, model=BAD_SURROGATE),
    ValueError,
    "model is not valid UTF-8",
)
case(
    "chat-model-int",
    lambda c, u: c.chat.completions.create(MESSAGES, model=123),
    TypeError,
    "model must be a str",
)
case(
    "completions-model-int",
    lambda c, u: c.completions.create("x", model=123),
    TypeError,
    "model must be a str",
)
case(
    "chat-extra_headers-int-value",
    lambda c, u: c.chat.completions.create(MESSAGES, extra_headers={"X-Trace": 5}),
    TypeError,
    "Header value must be str",
)

# Prompts: /v1/completions and native /completion take text, token ids, or a list of both.
PROMPT_CASES: list[tuple[str, Any, type[Exception], str]] = [
    ("none", None, TypeError, "prompt must be a str or a list of token ids"),
    ("int", 5, TypeError, "prompt must be a str or a list of token ids"),
    ("bytes", b"hi", TypeError, "prompt must be a str or a list of token ids"),
    ("dict", {"text": "hi"}, TypeError, "prompt must be a str or a list of token ids"),
    ("empty", "", ValueError, "prompt must not be empty"),
    ("empty-list", [], ValueError, "prompt must not be empty"),
    ("surrogate", BAD_SURROGATE, ValueError, "prompt is not valid UTF-8"),
    ("list-item-surrogate", ["fine", BAD_SURROGATE], ValueError, r"prompt\[1\] is not valid UTF-8"),
    ("list-item-empty", ["fine", ""], ValueError, r"prompt\[1\] must not be empty"),
    ("token-negative", [1, 2, -1], ValueError, r"prompt\[2\] must be a non-negative token id"),
    ("token-beyond-int32", [1, 2**31], ValueError, r"prompt\[1\] is 2147483648, larger than any"),
    (
        "token-bool",
        [True],
        TypeError,
        r"prompt\[0\] must be a str or a list of token ids, not bool",
    ),
    (
        "token-float",
        [1.0],
        TypeError,
        r"prompt\[0\] must be a str or a list of token ids, not float",
    ),
    (
        "nested-token-negative",
        [[1, 2], [3, -4]],
        ValueError,
        r"prompt\[1\]\[1\] must be a non-negative",
    ),
    (
        "too-many-tokens",
        [0] * (MAX_TOKEN_IDS + 1),
        ValueError,
        rf"prompt has {MAX_TOKEN_IDS + 1} ids; at most {MAX_TOKEN_IDS}",
    ),
]
for endpoint in ("completions", "complete"):
    for label, prompt, error, match in PROMPT_CASES:
        if endpoint == "completions":

            def call(c: LlamaCppClient, u: str, p: Any = prompt) -> Any:
                return c.completions.create(p)
        else:

            def call(c: LlamaCppClient, u: str, p: Any = prompt) -> Any:
                return c.complete(p)

        case(f"{endpoint}-prompt-{label}", call, error, match)

# infill
INFILL_CASES: list[tuple[str, Callable[[LlamaCppClient], Any], type[Exception], str]] = [
    ("input_prefix-int", lambda c: c.infill(5), TypeError, "input_prefix must be a str"),
    ("input_prefix-none", lambda c: c.infill(None), TypeError, "input_prefix must be a str"),
    ("input_suffix-list", lambda c: c.infill("a", ["b"]), TypeError, "input_suffix must be a str"),
    (
        "both-empty",
        lambda c: c.infill("", ""),
        ValueError,
        "infill needs input_prefix or input_suffix",
    ),
    (
        "input_prefix-surrogate",
        lambda c: c.infill(BAD_SURROGATE),
        ValueError,
        "input_prefix is not valid UTF-8",
    ),
    (
        "input_suffix-surrogate",
        lambda c: c.infill("a", BAD_SURROGATE),
        ValueError,
        "input_suffix is not valid UTF-8",
    ),
    ("prompt-int", lambda c: c.infill("a", prompt=5), TypeError, "prompt must be a str"),
    (
        "prompt-surrogate",
        lambda c: c.infill("a", prompt=BAD_SURROGATE),
        ValueError,
        "prompt is not valid UTF-8",
    ),
    (
        "input_extra-str",
        lambda c: c.infill("a", input_extra="ctx"),
        TypeError,
        "input_extra must be a list of",
    ),
    (
        "input_extra-item-no-text",
        lambda c: c.infill("a", input_extra=[{"filename": "a.py"}]),
        TypeError,
        r"input_extra\[0\] must be a dict with a 'text' str",
    ),
    (
        "input_extra-text-surrogate",
        lambda c: c.infill("a", input_extra=[{"filename": "a.py", "text": BAD_SURROGATE}]),
        ValueError,
        r"input_extra\[0\]\['text'\] is not valid UTF-8",
    ),
]
for label, fn, error, match in INFILL_CASES:
    case(f"infill-{label}", lambda c, u, fn=fn: fn(c), error, match)

# embed (convenience: one text or a list of them) and embeddings.create
EMBED_CASES: list[tuple[str, Any, type[Exception], str]] = [
    ("none", None, TypeError, "text must be a list of str"),
    ("int", 5, TypeError, "text must be a list of str"),
    ("bytes", b"hi", TypeError, "text must be a list of str"),
    ("dict", {"a": "b"}, TypeError, "text must be a list of str"),
    ("set", {"a"}, TypeError, "text must be a list of str"),
    ("empty", "", ValueError, "text must not be empty"),
    ("empty-list", [], ValueError, "text must not be empty"),
    ("item-int", ["a", 5], TypeError, r"text\[1\] must be a str"),
    ("item-empty", ["a", ""], ValueError, r"text\[1\] must not be empty"),
    ("surrogate", BAD_SURROGATE, ValueError, "text is not valid UTF-8"),
    ("item-surrogate", ["a", BAD_SURROGATE], ValueError, r"text\[1\] is not valid UTF-8"),
]
for label, text, error, match in EMBED_CASES:
    case(f"embed-{label}", lambda c, u, t=text: c.embed(t), error, match)

EMBEDDINGS_CASES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("input-none", {"input": None}, TypeError, "input must be a list of str"),
    ("input-int", {"input": 5}, TypeError, "input must be a list of str"),
    ("input-dict", {"input": {"a": "b"}}, TypeError, "input must be a list of str"),
    ("input-empty", {"input": ""}, ValueError, "input must not be empty"),
    ("input-empty-list", {"input": []}, ValueError, "input must not be empty"),
    ("input-item-empty", {"input": ["a", ""]}, ValueError, r"input\[1\] must not be empty"),
    ("input-surrogate", {"input": BAD_SURROGATE}, ValueError, "input is not valid UTF-8"),
    (
        "input-item-surrogate",
        {"input": ["a", BAD_SURROGATE]},
        ValueError,
        r"input\[1\] is not valid UTF-8",
    ),
    ("input-token-negative", {"input": [5, -1]}, ValueError, r"input\[1\] must be a non-negative"),
    (
        "input-too-many-tokens",
        {"input": [1] * (MAX_TOKEN_IDS + 1)},
        ValueError,
        rf"input has {MAX_TOKEN_IDS + 1} ids",
    ),
    (
        "encoding_format-xml",
        {"input": "a", "encoding_format": "xml"},
        ValueError,
        "encoding_format must be 'float' or 'base64', got 'xml'",
    ),
    (
        "encoding_format-FLOAT",
        {"input": "a", "encoding_format": "FLOAT"},
        ValueError,
        "encoding_format must be 'float' or 'base64'",
    ),
    ("model-int", {"input": "a", "model": 5}, TypeError, "model must be a str"),
    ("model-empty", {"input": "a", "model": ""}, ValueError, "model must not be empty"),
    ("extra-nan", {"input": "a", "dimensions": NAN}, ValueError, "dimensions is nan"),
    ("extra-object", {"input": "a", "user": object()}, TypeError, "user has type object"),
]
for label, kwargs, error, match in EMBEDDINGS_CASES:
    case(
        f"embeddings.create-{label}",
        lambda c, u, kw=kwargs: c.embeddings.create(**kw),
        error,
        match,
    )
case(
    "embeddings.create-encoding_format-none",
    lambda c, u: c.embeddings.create("a", encoding_format=None),
    TypeError,
    "encoding_format must be",
)

# tokenize / detokenize
TOKENIZE_CASES: list[tuple[str, Callable[[LlamaCppClient], Any], type[Exception], str]] = [
    ("text-none", lambda c: c.tokenize(None), TypeError, "text must be a str"),
    ("text-int", lambda c: c.tokenize(5), TypeError, "text must be a str"),
    ("text-list", lambda c: c.tokenize(["a"]), TypeError, "text must be a str"),
    ("text-bytes", lambda c: c.tokenize(b"a"), TypeError, "text must be a str"),
    ("text-surrogate", lambda c: c.tokenize(BAD_SURROGATE), ValueError, "text is not valid UTF-8"),
    (
        "add_special-str",
        lambda c: c.tokenize("a", "yes"),
        TypeError,
        "add_special must be True or False",
    ),
    (
        "add_special-int",
        lambda c: c.tokenize("a", 1),
        TypeError,
        "add_special must be True or False",
    ),
    (
        "with_pieces-none",
        lambda c: c.tokenize("a", True, None),
        TypeError,
        "with_pieces must be True or False",
    ),
    (
        "parse_special-int",
        lambda c: c.tokenize("a", parse_special=0),
        TypeError,
        "parse_special must be True or False",
    ),
]
for label, fn, error, match in TOKENIZE_CASES:
    case(f"tokenize-{label}", lambda c, u, fn=fn: fn(c), error, match)

DETOKENIZE_CASES: list[tuple[str, Any, type[Exception], str]] = [
    ("none", None, TypeError, "ids must be a list of int token ids"),
    ("int", 5, TypeError, "ids must be a list of int token ids"),
    ("str", "1 2 3", TypeError, "ids must be a list of int token ids, not str"),
    ("bytes", b"\x01\x02", TypeError, "ids must be a list of int token ids, not bytes"),
    ("dict", {1: 2}, TypeError, "ids must be a list of int token ids, not dict"),
    ("item-float", [1, 2.0], TypeError, r"ids\[1\] must be an int token id, not float"),
    ("item-bool", [True], TypeError, r"ids\[0\] must be an int token id, not bool"),
    ("item-str", ["1"], TypeError, r"ids\[0\] must be an int token id, not str"),
    ("item-negative", [5, -1], ValueError, r"ids\[1\] must be a non-negative token id, got -1"),
    ("item-beyond-int32", [2**31], ValueError, r"ids\[0\] is 2147483648, larger than any token id"),
    ("item-huge", [2**4000], ValueError, r"ids\[0\] is an int of 4001 bits"),
    (
        "too-many",
        [0] * (MAX_TOKEN_IDS + 1),
        ValueError,
        rf"ids has {MAX_TOKEN_IDS + 1} ids; at most {MAX_TOKEN_IDS} are accepted",
    ),
]
for label, ids, error, match in DETOKENIZE_CASES:
    case(f"detokenize-{label}", lambda c, u, ids=ids: c.detokenize(ids), error, match)

# rerank
RERANK_CASES: list[tuple[str, Callable[[LlamaCppClient], Any], type[Exception], str]] = [
    ("query-none", lambda c: c.rerank(None, ["a"]), TypeError, "query must be a str"),
    ("query-list", lambda c: c.rerank(["q"], ["a"]), TypeError, "query must be a str"),
    ("query-empty", lambda c: c.rerank("", ["a"]), ValueError, "query must not be empty"),
    (
        "query-surrogate",
        lambda c: c.rerank(BAD_SURROGATE, ["a"]),
        ValueError,
        "query is not valid UTF-8",
    ),
    ("documents-str", lambda c: c.rerank("q", "abc"), TypeError, "documents must be a list of str"),
    (
        "documents-dict",
        lambda c: c.rerank("q", {"a": 1}),
        TypeError,
        "documents must be a list of str, not dict",
    ),
    ("documents-none", lambda c: c.rerank("q", None), TypeError, "documents must be a list of str"),
    ("documents-empty", lambda c: c.rerank("q", []), ValueError, "documents must not be empty"),
    (
        "documents-item-int",
        lambda c: c.rerank("q", ["a", 1]),
        TypeError,
        r"documents\[1\] must be a str",
    ),
    (
        "documents-item-surrogate",
        lambda c: c.rerank("q", ["a", BAD_SURROGATE]),
        ValueError,
        r"documents\[1\] is not valid UTF-8",
    ),
    ("top_n-0", lambda c: c.rerank("q", ["a"], 0), ValueError, "top_n must be >= 1"),
    ("top_n-bool", lambda c: c.rerank("q", ["a"], True), TypeError, "top_n must be an int"),
    ("top_n-str", lambda c: c.rerank("q", ["a"], "2"), TypeError, "top_n must be an int"),
    (
        "return_documents-str",
        lambda c: c.rerank("q", ["a"], return_documents="yes"),
        TypeError,
        "return_documents must be True or False",
    ),
]
for label, fn, error, match in RERANK_CASES:
    case(f"rerank-{label}", lambda c, u, fn=fn: fn(c), error, match)

# slots
BAD_FILENAMES: list[tuple[str, Any, type[Exception], str]] = [
    ("parent-dir", "../x", ValueError, "filename must be a bare file name"),
    ("subdir", "a/b", ValueError, "filename must be a bare file name"),
    ("absolute", "/tmp/x", ValueError, "filename must be a bare file name"),
    ("backslash", "a\\b", ValueError, "filename must be a bare file name"),
    ("dotdot", "..", ValueError, "filename must be a bare file name"),
    ("dot", ".", ValueError, "filename must be a bare file name"),
    ("nul", "a\0b", ValueError, "filename must be a bare file name"),
    ("empty", "", ValueError, "filename must not be empty"),
    ("none", None, TypeError, "filename must be a str"),
    ("path-like-int", 5, TypeError, "filename must be a str"),
    ("surrogate", BAD_SURROGATE, ValueError, "filename is not valid UTF-8"),
]
for action in ("save", "restore"):
    for label, filename, error, match in BAD_FILENAMES:
        case(
            f"slots.{action}-filename-{label}",
            lambda c, u, a=action, f=filename: getattr(c.slots, a)(0, f),
            error,
            match,
        )
    for label, slot_id, error, match in (
        ("negative", -1, ValueError, "slot_id must be >= 0"),
        ("bool", True, TypeError, "slot_id must be an int"),
        ("str", "0", TypeError, "slot_id must be an int"),
    ):
        case(
            f"slots.{action}-slot_id-{label}",
            lambda c, u, a=action, i=slot_id: getattr(c.slots, a)(i, "x.bin"),
            error,
            match,
        )
case(
    "slots.erase-slot_id-negative",
    lambda c, u: c.slots.erase(-1),
    ValueError,
    "slot_id must be >= 0",
)
case(
    "slots.erase-slot_id-bool",
    lambda c, u: c.slots.erase(False),
    TypeError,
    "slot_id must be an int",
)
case(
    "slots.erase-slot_id-float",
    lambda c, u: c.slots.erase(1.0),
    TypeError,
    "slot_id must be an int",
)
case(
    "slots.erase-slot_id-none",
    lambda c, u: c.slots.erase(None),
    TypeError,
    "slot_id must be an int",
)
case(
    "slots.save-slot_id-none",
    lambda c, u: c.slots.save(None, "x.bin"),
    TypeError,
    "slot_id must be an int",
)

# lora
LORA_CASES: list[tuple[str, Callable[[LlamaCppClient], Any], type[Exception], str]] = [
    ("apply-path-none", lambda c: c.lora.apply(None), TypeError, "path must be a str"),
    ("apply-path-int", lambda c: c.lora.apply(5), TypeError, "path must be a str"),
    ("apply-path-empty", lambda c: c.lora.apply(""), ValueError, "path must not be empty"),
    (
        "apply-path-surrogate",
        lambda c: c.lora.apply(BAD_SURROGATE),
        ValueError,
        "path is not valid UTF-8",
    ),
    (
        "apply-scale-nan",
        lambda c: c.lora.apply("a.gguf", NAN),
        ValueError,
        "scale must be a finite number",
    ),
    (
        "apply-scale-inf",
        lambda c: c.lora.apply("a.gguf", INF),
        ValueError,
        "scale must be a finite number",
    ),
    (
        "apply-scale--inf",
        lambda c: c.lora.apply("a.gguf", -INF),
        ValueError,
        "scale must be a finite number",
    ),
    ("apply-scale-str", lambda c: c.lora.apply("a.gguf", "1"), TypeError, "scale must be a number"),
    (
        "apply-scale-bool",
        lambda c: c.lora.apply("a.gguf", True),
        TypeError,
        "scale must be a number",
    ),
    ("set_scales-none", lambda c: c.lora.set_scales(None), TypeError, "scales must be a dict"),
    (
        "set_scales-list",
        lambda c: c.lora.set_scales([(0, 1.0)]),
        TypeError,
        "scales must be a dict",
    ),
    (
        "set_scales-id-str",
        lambda c: c.lora.set_scales({"0": 1.0}),
        TypeError,
        "adapter id must be an int",
    ),
    (
        "set_scales-id-bool",
        lambda c: c.lora.set_scales({True: 1.0}),
        TypeError,
        "adapter id must be an int",
    ),
    (
        "set_scales-id-negative",
        lambda c: c.lora.set_scales({-1: 1.0}),
        ValueError,
        "adapter id must be >= 0",
    ),
    (
        "set_scales-scale-nan",
        lambda c: c.lora.set_scales({0: NAN}),
        ValueError,
        "scale of adapter 0 must be a finite number",
    ),
    (
        "set_scales-scale-inf",
        lambda c: c.lora.set_scales({0: 1.0, 1: INF}),
        ValueError,
        "scale of adapter 1 must be a finite number",
    ),
    (
        "set_scales-scale-str",
        lambda c: c.lora.set_scales({0: "0.5"}),
        TypeError,
        "scale of adapter 0 must be a number",
    ),
]
for label, fn, error, match in LORA_CASES:
    case(f"lora.{label}", lambda c, u, fn=fn: fn(c), error, match)
case(
    "lora.set_scales-empty",
    lambda c, u: c.lora.set_scales({}),
    ValueError,
    "scales must name at least one adapter",
)

# health.wait_until_ready
HEALTH_CASES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("timeout-negative", {"timeout": -1}, ValueError, "timeout must be >= 0"),
    ("timeout-nan", {"timeout": NAN}, ValueError, "timeout must be a finite number"),
    ("timeout-inf", {"timeout": INF}, ValueError, "timeout must be a finite number"),
    ("timeout-str", {"timeout": "5"}, TypeError, "timeout must be a number"),
    ("timeout-bool", {"timeout": True}, TypeError, "timeout must be a number"),
    ("timeout-none", {"timeout": None}, TypeError, "timeout must be a number"),
    ("interval-0", {"interval": 0}, ValueError, "interval must be >= 0.001"),
    ("interval-negative", {"interval": -1}, ValueError, "interval must be >= 0.001"),
    ("interval-nan", {"interval": NAN}, ValueError, "interval must be a finite number"),
    ("interval-str", {"interval": "0.1"}, TypeError, "interval must be a number"),
]
for label, kwargs, error, match in HEALTH_CASES:
    case(
        f"health.wait_until_ready-{label}",
        lambda c, u, kw=kwargs: c.health.wait_until_ready(**kw),
        error,
        match,
    )

# The constructor
CONSTRUCTOR_CASES: list[tuple[str, Callable[[str], Any], type[Exception], str]] = [
    ("base_url-int", lambda u: LlamaCppClient(8080), TypeError, "base_url must be a str"),
    ("base_url-bytes", lambda u: LlamaCppClient(u.encode()), TypeError, "base_url must be a str"),
    (
        "base_url-no-scheme",
        lambda u: LlamaCppClient("127.0.0.1:8080"),
        ValueError,
        "base_url must look like 'http://127.0.0.1:8080'",
    ),
    (
        "base_url-words",
        lambda u: LlamaCppClient("not a url"),
        ValueError,
        "base_url must look like",
    ),
    (
        "base_url-ftp",
        lambda u: LlamaCppClient("ftp://127.0.0.1"),
        ValueError,
        "base_url must look like",
    ),
    (
        "base_url-no-host",
        lambda u: LlamaCppClient("http://"),
        ValueError,
        "base_url must look like",
    ),
    ("base_url-empty", lambda u: LlamaCppClient(""), ValueError, "base_url"),
    ("base_url-zero", lambda u: LlamaCppClient(0), TypeError, "base_url must be a str"),
    ("api_key-int", lambda u: LlamaCppClient(u, api_key=123), TypeError, "api_key must be"),
    ("api_key-bytes", lambda u: LlamaCppClient(u, api_key=b"k"), TypeError, "api_key must be"),
    ("api_key-empty", lambda u: LlamaCppClient(u, api_key=""), ValueError, "api_key must be"),
    (
        "api_key-newline",
        lambda u: LlamaCppClient(u, api_key="key\nX-Injected: 1"),
        ValueError,
        "api_key",
    ),
    ("api_key-non-ascii", lambda u: LlamaCppClient(u, api_key="clé"), ValueError, "api_key"),
    (
        "max_retries-negative",
        lambda u: LlamaCppClient(u, max_retries=-1),
        ValueError,
        "max_retries must be >= 0",
    ),
    (
        "max_retries-too-many",
        lambda u: LlamaCppClient(u, max_retries=101),
        ValueError,
        "max_retries must be <= 100",
    ),
    (
        "max_retries-bool",
        lambda u: LlamaCppClient(u, max_retries=True),
        TypeError,
        "max_retries must be an int",
    ),
    (
        "max_retries-float",
        lambda u: LlamaCppClient(u, max_retries=2.0),
        TypeError,
        "max_retries must be an int",
    ),
    (
        "max_retries-str",
        lambda u: LlamaCppClient(u, max_retries="2"),
        TypeError,
        "max_retries must be an int",
    ),
    (
        "max_connections-0",
        lambda u: LlamaCppClient(u, max_connections=0),
        ValueError,
        "max_connections must be >= 1",
    ),
    (
        "timeout-negative",
        lambda u: LlamaCppClient(u, timeout=-1),
        ValueError,
        "timeout must be a positive finite number of seconds",
    ),
    (
        "timeout-zero",
        lambda u: LlamaCppClient(u, timeout=0),
        ValueError,
        "timeout must be a positive finite number",
    ),
    (
        "timeout-nan",
        lambda u: LlamaCppClient(u, timeout=NAN),
        ValueError,
        "timeout must be a positive finite number",
    ),
    (
        "timeout-inf",
        lambda u: LlamaCppClient(u, timeout=INF),
        ValueError,
        "timeout must be a positive finite number",
    ),
    (
        "timeout-str",
        lambda u: LlamaCppClient(u, timeout="30"),
        TypeError,
        "timeout must be seconds as a number, not str",
    ),
    (
        "timeout-bool",
        lambda u: LlamaCppClient(u, timeout=True),
        TypeError,
        "timeout must be seconds as a number, not bool",
    ),
    (
        "timeout-list",
        lambda u: LlamaCppClient(u, timeout=[5, 30]),
        TypeError,
        "timeout must be seconds as a number, not list",
    ),
    (
        "timeout-tuple-3",
        lambda u: LlamaCppClient(u, timeout=(5, 30, 1)),
        ValueError,
        r"timeout as a tuple must be \(connect, read\) seconds",
    ),
    (
        "timeout-tuple-1",
        lambda u: LlamaCppClient(u, timeout=(5,)),
        ValueError,
        r"timeout as a tuple must be \(connect, read\)",
    ),
    (
        "timeout-tuple-negative-connect",
        lambda u: LlamaCppClient(u, timeout=(-1, 30)),
        ValueError,
        "timeout must be a positive finite number",
    ),
    (
        "timeout-tuple-nan-read",
        lambda u: LlamaCppClient(u, timeout=(5, NAN)),
        ValueError,
        "timeout must be a positive finite number",
    ),
    (
        "timeout-tuple-str",
        lambda u: LlamaCppClient(u, timeout=(5, "30")),
        TypeError,
        "timeout must be seconds as a number",
    ),
    (
        "timeout-int-too-big-for-float",
        lambda u: LlamaCppClient(u, timeout=10**400),
        ValueError,
        "timeout must be a positive finite number",
    ),
]
for label, fn, error, match in CONSTRUCTOR_CASES:
    case(f"LlamaCppClient-{label}", lambda c, u, fn=fn: fn(u), error, match)


# --- the test -------------------------------------------------------------------------

NOT_REACHED = Reply(
    500, {"error": {"code": 500, "message": "should not be reached", "type": "server_error"}}
)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(NOT_REACHED) as server:
        yield server


@pytest.fixture
def client(server: FaultServer) -> Iterator[LlamaCppClient]:
    with LlamaCppClient(server.url, max_retries=0) as client:
        yield client


def test_table_covers_every_public_call() -> None:
    ids = {p.id for p in CASES}
    for prefix in (
        "chat-",
        "chat_completion-",
        "completions-",
        "complete-",
        "infill-",
        "embed-",
        "embeddings.create-",
        "tokenize-",
        "detokenize-",
        "apply_template-",
        "rerank-",
        "slots.save-",
        "slots.restore-",
        "slots.erase-",
        "lora.apply-",
        "lora.set_scales-",
        "health.wait_until_ready-",
        "LlamaCppClient-",
    ):
        assert any(i.startswith(prefix) for i in ids), prefix
    assert len(ids) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize(("call", "error", "match"), CASES)
def test_bad_input_is_refused_before_the_network(
    server: FaultServer, client: LlamaCppClient, call: Call, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        call(client, server.url)
    # Exactly the promised type: not UnicodeEncodeError or another ValueError subclass
    # escaping from deeper down.
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert server.requests == []
    assert server.connections == 0


# --- valid edge values go through ------------------------------------------------------

CHAT_REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "tiny",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
REPLIES: dict[str, Any] = {
    "/v1/chat/completions": CHAT_REPLY,
    "/v1/completions": {"choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}]},
    "/completion": {"content": "ok", "stop": True},
    "/infill": {"content": "ok", "stop": True},
    "/v1/embeddings": {"data": [{"index": 0, "embedding": [0.5]}]},
    "/tokenize": {"tokens": [1]},
    "/detokenize": {"content": "ok"},
    "/apply-template": {"prompt": "ok"},
    "/v1/rerank": {"results": [{"index": 0, "relevance_score": 0.5}]},
}


def _answer(request: SeenRequest) -> Reply:
    return Reply(200, REPLIES[request.path.split("?")[0]])


UNICODE = "naïve 日本 🦙"
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}

# (id, call, path, fields the request body must carry)
VALID: list[Any] = [
    pytest.param(
        lambda c: c.chat.completions.create(MESSAGES, temperature=0),
        "/v1/chat/completions",
        {"temperature": 0},
        id="chat-temperature-0",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(MESSAGES, temperature=0.0, top_p=1.0, top_k=0),
        "/v1/chat/completions",
        {"temperature": 0.0, "top_p": 1.0, "top_k": 0},
        id="chat-top_p-1.0-top_k-0",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(MESSAGES, top_p=0.0),
        "/v1/chat/completions",
        {"top_p": 0.0},
        id="chat-top_p-0",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(MESSAGES, max_tokens=-1),
        "/v1/chat/completions",
        {"max_tokens": -1},
        id="chat-max_tokens-unlimited",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(MESSAGES, max_tokens=2**31 - 1),
        "/v1/chat/completions",
        {"max_tokens": 2**31 - 1},
        id="chat-max_tokens-int32-max",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(MESSAGES, seed=-1),
        "/v1/chat/completions",
        {"seed": -1},
        id="chat-seed-random",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(MESSAGES, seed=2**32 - 1),
        "/v1/chat/completions",
        {"seed": 2**32 - 1},
        id="chat-seed-uint32-max",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(MESSAGES, frequency_penalty=-2.0, presence_penalty=2),
        "/v1/chat/completions",
        {"frequency_penalty": -2.0, "presence_penalty": 2},
        id="chat-penalties-at-bounds",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(
            MESSAGES, temperature=None, top_p=None, max_tokens=None, seed=None
        ),
        "/v1/chat/completions",
        {},
        id="chat-none-means-server-default",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(MESSAGES, stop="x"),
        "/v1/chat/completions",
        {"stop": ["x"]},
        id="chat-stop-str",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(MESSAGES, stop=("a", "b")),
        "/v1/chat/completions",
        {"stop": ["a", "b"]},
        id="chat-stop-tuple",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(MESSAGES, stop=[]),
        "/v1/chat/completions",
        {"stop": []},
        id="chat-stop-empty-list",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(tuple(MESSAGES)),
        "/v1/chat/completions",
        {"messages": MESSAGES},
        id="chat-messages-tuple",
    ),
    pytest.param(
        lambda c: c.chat.completions.create([{"role": "user", "content": ""}]),
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": ""}]},
        id="chat-content-empty-str",
    ),
    pytest.param(
        lambda c: c.chat.completions.create([{"role": "user", "content": UNICODE}]),
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": UNICODE}]},
        id="chat-content-non-ascii",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(
            [
                *MESSAGES,
                {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ]
        ),
        "/v1/chat/completions",
        {
            "messages": [
                *MESSAGES,
                {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ]
        },
        id="chat-assistant-tool_calls-content-none",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(
            [
                *MESSAGES,
                {"role": "assistant", "tool_calls": [TOOL_CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ]
        ),
        "/v1/chat/completions",
        {
            "messages": [
                *MESSAGES,
                {"role": "assistant", "tool_calls": [TOOL_CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ]
        },
        id="chat-assistant-tool_calls-content-omitted",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                }
            ]
        ),
        "/v1/chat/completions",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                }
            ]
        },
        id="chat-content-parts",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(
            MESSAGES,
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=0,
            mirostat=2,
            n_probs=0,
            cache_prompt=False,
        ),
        "/v1/chat/completions",
        {
            "min_p": 0.0,
            "typical_p": 1.0,
            "repeat_penalty": 0,
            "mirostat": 2,
            "n_probs": 0,
            "cache_prompt": False,
        },
        id="chat-extras-at-bounds",
    ),
    pytest.param(
        lambda c: c.chat.completions.create(
            MESSAGES, my_param={"a": [1, 2.5, None, "x"]}, logit_bias={"15": -100.0}
        ),
        "/v1/chat/completions",
        {"my_param": {"a": [1, 2.5, None, "x"]}, "logit_bias": {"15": -100.0}},
        id="chat-unknown-extra-passes-through",
    ),
    pytest.param(
        lambda c: c.chat_completion(messages=MESSAGES, temperature=0, max_tokens=-1),
        "/v1/chat/completions",
        {"temperature": 0, "max_tokens": -1},
        id="chat_completion-edges",
    ),
    pytest.param(
        lambda c: c.completions.create([1, 2, 3], max_tokens=-1, top_p=1.0),
        "/v1/completions",
        {"prompt": [1, 2, 3], "max_tokens": -1, "top_p": 1.0},
        id="completions-token-prompt",
    ),
    pytest.param(
        lambda c: c.complete("x", max_tokens=0),
        "/completion",
        {"n_predict": 0},
        id="complete-max_tokens-0-allowed",
    ),
    pytest.param(
        lambda c: c.complete("x", max_tokens=-1, seed=-1),
        "/completion",
        {"n_predict": -1, "seed": -1},
        id="complete-max_tokens-unlimited",
    ),
    pytest.param(
        lambda c: c.complete(["a", [1, 2]]),
        "/completion",
        {"prompt": ["a", [1, 2]]},
        id="complete-prompt-list-of-prompts",
    ),
    pytest.param(
        lambda c: c.complete([0, 2**31 - 1]),
        "/completion",
        {"prompt": [0, 2**31 - 1]},
        id="complete-token-ids-at-bounds",
    ),
    pytest.param(
        lambda c: c.complete([1, "x", 2]),
        "/completion",
        {"prompt": [1, "x", 2]},
        id="complete-prompt-mixed-tokens-and-text",
    ),
    pytest.param(
        lambda c: c.infill("", "}", max_tokens=0),
        "/infill",
        {"input_prefix": "", "input_suffix": "}", "n_predict": 0},
        id="infill-suffix-only",
    ),
    pytest.param(
        lambda c: c.embed(["a", "b"]), "/v1/embeddings", {"input": ["a", "b"]}, id="embed-list"
    ),
    pytest.param(
        lambda c: c.embeddings.create([1, 2, 3]),
        "/v1/embeddings",
        {"input": [1, 2, 3]},
        id="embeddings.create-token-ids",
    ),
    pytest.param(lambda c: c.tokenize(""), "/tokenize", {"content": ""}, id="tokenize-empty-text"),
    pytest.param(lambda c: c.detokenize([]), "/detokenize", {"tokens": []}, id="detokenize-empty"),
    pytest.param(
        lambda c: c.detokenize((0, 1)), "/detokenize", {"tokens": [0, 1]}, id="detokenize-tuple"
    ),
    pytest.param(
        lambda c: c.detokenize([0] * MAX_TOKEN_IDS),
        "/detokenize",
        {"tokens": [0] * MAX_TOKEN_IDS},
        id="detokenize-exactly-max-ids",
    ),
    pytest.param(
        lambda c: c.apply_template(tuple(MESSAGES)),
        "/apply-template",
        {"messages": MESSAGES},
        id="apply_template-tuple",
    ),
    pytest.param(
        lambda c: c.rerank("q", ["", "b"], 1),
        "/v1/rerank",
        {"query": "q", "documents": ["", "b"], "top_n": 1},
        id="rerank-empty-document",
    ),
]


@pytest.mark.parametrize(("call", "path", "fields"), VALID)
def test_valid_edge_values_reach_the_server(
    call: Callable[[LlamaCppClient], Any], path: str, fields: dict[str, Any]
) -> None:
    with FaultServer(_answer) as server, LlamaCppClient(server.url, max_retries=0) as client:
        call(client)
        assert [r.path for r in server.requests] == [path]
        body = server.requests[0].json()
        for key, value in fields.items():
            assert body[key] == value, key
        if path == "/v1/chat/completions" and not fields:
            for key in ("temperature", "top_p", "max_tokens", "seed"):
                assert key not in body


def test_constructor_accepts_valid_edges() -> None:
    with LlamaCppClient(
        "http://127.0.0.1:8080/v1/", api_key="k", max_retries=0, timeout=(1, None)
    ) as client:
        assert client.base_url == "http://127.0.0.1:8080"
        assert client.timeout.connect == 1.0 and client.timeout.read is None
    with LlamaCppClient("https://example.invalid", timeout=None, max_retries=100) as client:
        assert client.timeout.read is None


def test_health_wait_zero_timeout_still_asks_once() -> None:
    with (
        FaultServer(Reply(200, {"status": "ok"})) as server,
        LlamaCppClient(server.url, max_retries=0) as client,
    ):
        assert client.health.wait_until_ready(timeout=0)["status"] == "ok"
        assert len(server.requests) == 1


def test_slot_filename_edges_reach_the_server() -> None:
    with (
        FaultServer(Reply(200, {"id_slot": 0})) as server,
        LlamaCppClient(server.url, max_retries=0) as client,
    ):
        client.slots.save(0, "cache..bin")
        client.slots.restore(3, ".hidden")
        assert [r.json() for r in server.requests] == [
            {"filename": "cache..bin"},
            {"filename": ".hidden"},
        ]
