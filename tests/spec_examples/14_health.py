health = client.health.check()
print(f"Status: {health.get('status')}")
# Returns: {"status": "ok"} or {"status": "loading model"} etc.
