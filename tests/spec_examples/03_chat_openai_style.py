response = client.chat.completions.create(
    messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is GGUF format?"},
    ],
    max_tokens=128,
    temperature=0.7,
    top_p=0.9,
    top_k=40,
)

print(response.choices[0].message.content)
print(f"Tokens used: {response.usage.completion_tokens}")
