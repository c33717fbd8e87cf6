"""llamatelemetry: a typed client, OpenTelemetry instrumentation and a server manager for
llama.cpp's ``llama-server``.

```python
from llamatelemetry import LlamaCppClient, ServerManager

with ServerManager(port=0) as server:
    server.start("model.gguf")
    client = server.client()
    print(client.chat.completions.create(messages=[{"role": "user", "content": "Hi"}]))
```
"""

from ._instrument import instrument, uninstrument
from ._version import __version__
from .api import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncLlamaCppClient,
    LlamaCppClient,
    LlamaTelemetryError,
)
from .server import InferenceEngine, ServerError, ServerManager, ServerStartError

__all__ = [
    "__version__",
    "LlamaCppClient",
    "AsyncLlamaCppClient",
    "ServerManager",
    "InferenceEngine",
    "LlamaTelemetryError",
    "APIError",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ServerError",
    "ServerStartError",
    "instrument",
    "uninstrument",
]
