models = client.models.list()
for model in models:
    print(f"Model: {model.get('id')}")
