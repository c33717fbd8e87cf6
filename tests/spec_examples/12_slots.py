# List active slots
slots = client.slots.list()
for slot in slots:
    print(f"Slot {slot['id']}: state={slot['state']}")
    if slot.get('prompt'):
        print(f"  Prompt: {slot['prompt'][:50]}...")
