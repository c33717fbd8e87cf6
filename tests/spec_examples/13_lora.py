# List loaded adapters
adapters = client.lora.list()
print(f"Active adapters: {adapters}")

# Apply a LoRA adapter (if supported by the server build)
# client.lora.apply("/path/to/adapter.gguf")
