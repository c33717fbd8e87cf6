text = client.detokenize([1, 22557, 29892, 3186, 29991])
print(f"Text: {text}")
