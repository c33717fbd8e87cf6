from llamatelemetry.telemetry import InstrumentedLlamaCppClient

client = InstrumentedLlamaCppClient(base_url="http://127.0.0.1:8080")

# Note: uses chat_completions (plural) -- different from LlamaCppClient
response = client.chat_completions({
    "messages": [{"role": "user", "content": "What is GGUF?"}],
    "max_tokens": 64,
})
