"""Errors raised while starting or supervising a llama.cpp server.

```
LlamaTelemetryError         (the library's base, see llamatelemetry.api)
 ├── ServerError             anything the server manager cannot do
 │    └── ServerStartError  the server did not come up: bad model, busy port, crash, timeout
 └── BatchInferenceError     some prompts of an InferenceEngine.batch_infer call failed
                             (the engine's, in ``_engine/_batch_inference_error``)
```

A start failure carries the tail of the server's own log, because the real reason
(a truncated tensor, an unknown flag, a port someone else bound) is only ever written there.
"""

from __future__ import annotations

from ..api import LlamaTelemetryError

__all__ = ["ServerError", "ServerStartError"]


class ServerError(LlamaTelemetryError):
    """Base class for server-manager failures."""


class ServerStartError(ServerError):
    """The server could not be started; ``log_tail`` holds the last lines of its log.

    ``returncode`` is the child's exit status when it exited on its own, else ``None``
    (the failure was found before launch, or the start timed out and we killed it).
    """

    def __init__(self, message: str, *, log_tail: str = "", returncode: int | None = None) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.returncode = returncode
