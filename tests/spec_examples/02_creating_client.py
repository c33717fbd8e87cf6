from llamatelemetry.api import LlamaCppClient

# Default -- port 8080 (llama.cpp default)
client = LlamaCppClient()

# Matching llamatelemetry ServerManager port
client = LlamaCppClient(base_url="http://127.0.0.1:8080")
