tokens = client.tokenize("Hello, world!")
print(f"Token count: {len(tokens)}")
print(f"Token IDs: {tokens}")
