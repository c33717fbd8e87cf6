# Via the models endpoint
models = client.models.list()
if models:
    print(f"Loaded model: {models[0].get('id')}")
