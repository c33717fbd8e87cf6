"""Quick start: health, chat, a stream, tokens and an embedding, against a llama-server.

    LLAMA_BASE_URL=http://127.0.0.1:8080 python examples/quickstart.py

Without LLAMA_BASE_URL, the built-in tiny model (random weights: gibberish text, real
everything else) is served for the run; that needs the ``server`` extra.
"""

from __future__ import annotations

from llamatelemetry.api import LlamaCppClient, NotSupportedError
from llamatelemetry.testing import url_or_tiny_server


def announce(url: str) -> None:
    print(f"(no LLAMA_BASE_URL: serving the built-in tiny model at {url})")


def main() -> None:
    with url_or_tiny_server(announce=announce) as url, LlamaCppClient(base_url=url) as client:
        print(f"health: {client.health.check()['status']}")

        reply = client.chat.completions.create(
            messages=[
                {"role": "system", "content": "You are concise."},
                {"role": "user", "content": "What is llama.cpp?"},
            ],
            max_tokens=32,
        )
        print(f"chat: {reply.choices[0].message.content!r}")
        print(
            f"  {reply.usage.prompt_tokens} prompt tokens, {reply.usage.completion_tokens} "
            f"generated, finish_reason={reply.choices[0].finish_reason}"
        )

        print("stream: ", end="", flush=True)
        with client.chat.completions.create(
            messages=[{"role": "user", "content": "Count to ten."}], max_tokens=16, stream=True
        ) as stream:
            for chunk in stream:
                print(chunk.choices[0].delta.content or "", end="", flush=True)
        print()

        tokens = client.tokenize("Hello, world!")
        print(f"tokenize: {len(tokens)} tokens {tokens}")
        print(f"detokenize: {client.detokenize(tokens)!r}")

        try:
            print(f"embed: {len(client.embed('Hello, world!'))} dimensions")
        except NotSupportedError:
            print("embed: skipped (start the server with --embedding --pooling mean)")


if __name__ == "__main__":
    main()
