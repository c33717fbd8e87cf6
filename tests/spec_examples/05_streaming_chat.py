response = client.chat.completions.create(
    messages=[{"role": "user", "content": "Write a poem about GPUs."}],
    max_tokens=128,
    stream=True,
)

for chunk in response:
    if chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
