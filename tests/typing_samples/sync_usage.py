"""What a user writes with the sync client (the spec page's own forms); mypy --strict must
accept it as is."""

from __future__ import annotations

from llamatelemetry.api import ChatCompletion, LlamaCppClient, NativeCompletion
from llamatelemetry.server import InferenceEngine, InferenceResult
from llamatelemetry.telemetry import InstrumentedLlamaCppClient

client = LlamaCppClient(base_url="http://127.0.0.1:8080")
response = client.chat.completions.create(
    messages=[{"role": "user", "content": "What is GGUF format?"}], max_tokens=128
)
print(response.choices[0].message.content, response.usage)
singular: ChatCompletion = client.chat_completion(
    messages=[{"role": "user", "content": "Explain tensor cores."}], max_tokens=64
)
for chunk in client.chat.completions.create(
    messages=[{"role": "user", "content": "Write a poem."}], max_tokens=128, stream=True
):
    if chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="")
flag = bool(len(singular.choices))
either = client.chat.completions.create(messages=[{"role": "user", "content": "x"}], stream=flag)
vector: list[float] = client.embed("What is CUDA?")
tokens: list[int] = client.tokenize("Hello, world!")
text: str = client.detokenize(tokens)
native = client.complete("x", max_tokens=4)
results = client.rerank(query="q", documents=["a", "b"])
print(vector, text, native, results[0]["score"], either)
traced = InstrumentedLlamaCppClient(base_url="http://127.0.0.1:8080")
traced_reply: ChatCompletion = traced.chat_completions(
    {"messages": [{"role": "user", "content": "What is GGUF?"}], "max_tokens": 64}
)
whole: str = client.complete("x", max_tokens=4, min_p=0.05, grammar="root ::= [a-z]+").content
filled: str = client.infill("def f():", "    return 1", max_tokens=4).content
for piece in client.complete("x", stream=True):
    print(piece.content)
tuned = LlamaCppClient(timeout=5, max_retries=0, total_timeout=30.0, verify=False)
extra = tuned.chat.completions.create(
    messages=[{"role": "user", "content": "x"}], extra_body={"n_cmpl": 2}, temperature=None
)
engine_result: InferenceResult = InferenceEngine("m.gguf").infer(
    "x", max_tokens=4, stop_sequences=["\n"], repeat_penalty=1.1
)
_: NativeCompletion | object = native
print(whole, filled, extra, engine_result)
for call in response.choices[0].message.tool_calls or []:
    tool_name: str | None = call.function.name
    print(tool_name, call.function.arguments)
final_reply: ChatCompletion = client.chat.completions.create(
    messages=[{"role": "user", "content": "x"}], stream=True
).get_final_completion()
answer: str = client.responses.create("x", max_output_tokens=4).output_text
words: str = client.messages.create([{"role": "user", "content": "x"}], 4).text
counted: int = client.chat.completions.count_tokens([{"role": "user", "content": "x"}])
print(final_reply, answer, words, counted)
