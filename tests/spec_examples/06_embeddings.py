# Simple embedding
result = client.embed("What is CUDA?")
print(f"Embedding dimension: {len(result)}")

# OpenAI-style embedding
response = client.embeddings.create(
    input=["llamatelemetry", "llama.cpp", "CUDA programming"],
    model="/path/to/model.gguf",
)
for item in response.data:
    print(f"Index {item.index}: {len(item.embedding)} dimensions")
