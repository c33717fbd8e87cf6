"""What the tests need besides the project's packages, fetched or built once and cached:

    python -m tests     # the real model (SmolLM2), a real llama-server binary, and
                        # nginx and Prometheus from Debian's packages (for the fleet)

The README's test command and CI run it before pytest.
"""

from __future__ import annotations

from . import debian, llama_server, models

print(f"model: {models.fetch()}")
print(f"llama-server: {llama_server.build()}")
print(f"fleet: {debian.install()}")
