from llamatelemetry.api import LlamaCppClient
import requests

client = LlamaCppClient(base_url="http://127.0.0.1:8080")

try:
    response = client.chat_completion(
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=64,
    )
    print(response.choices[0].message.content)
except requests.ConnectionError:
    print("Server not running. Start it with ServerManager or InferenceEngine.")
except requests.Timeout:
    print("Request timed out. Model may be loading or prompt may be too long.")
except Exception as e:
    print(f"Unexpected error: {e}")
