response = client.chat_completion(
    messages=[{"role": "user", "content": "Explain tensor cores."}],
    max_tokens=64,
    temperature=0.5,
)
print(response.choices[0].message.content)
