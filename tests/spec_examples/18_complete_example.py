from llamatelemetry.api import LlamaCppClient

# Connect to a running llama-server (started by ServerManager on port 8080)
client = LlamaCppClient(base_url="http://127.0.0.1:8080")

# Check health
health = client.health.check()
print(f"Server status: {health.get('status')}")

# Chat completion (OpenAI-style)
response = client.chat.completions.create(
    messages=[
        {"role": "system", "content": "You are a CUDA expert."},
        {"role": "user", "content": "What are warp divergence issues?"},
    ],
    max_tokens=128,
    temperature=0.7,
)
print(response.choices[0].message.content)

# Tokenize a prompt to check length
tokens = client.tokenize("What are warp divergence issues?")
print(f"Prompt tokens: {len(tokens)}")

# Get embeddings
embedding = client.embed("CUDA warp divergence")
print(f"Embedding dims: {len(embedding)}")

# Check slots
slots = client.slots.list()
print(f"Active slots: {len(slots)}")
