"""Errors raised while starting or supervising a llama.cpp server, or by a batch of
inference calls on one.

```
LlamaTelemetryError         (the library's base, see llamatelemetry.api)
 ├── ServerError             anything the server manager cannot do
 │    └── ServerStartError  the server did not come up: bad model, busy port, crash, timeout
 └── BatchInferenceError     some prompts of an InferenceEngine.batch_infer call failed
```

A start failure carries the tail of the server's own log, because the real reason
(a truncated tensor, an unknown flag, a port someone else bound) is only ever written there.
"""

from __future__ import annotations

from ..api import LlamaTelemetryError
from ._results import InferenceResult

__all__ = ["BatchInferenceError", "ServerError", "ServerStartError"]


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


class BatchInferenceError(LlamaTelemetryError):
    """Some prompts of a `InferenceEngine.batch_infer` call failed; the others did not.

    ``results[i]`` is the `InferenceResult` of prompt ``i``, or the exception it raised;
    ``errors`` maps the index of each failed prompt to its exception; `successes` maps
    the others to their results. The first failure is also the ``__cause__``.
    """

    def __init__(self, results: list[InferenceResult | Exception]) -> None:
        self.results = results
        self.errors: dict[int, Exception] = {
            i: r for i, r in enumerate(results) if isinstance(r, Exception)
        }
        shown = "; ".join(
            f"[{i}] {type(e).__name__}: {e}" for i, e in list(self.errors.items())[:5]
        )
        more = f"; and {len(self.errors) - 5} more" if len(self.errors) > 5 else ""
        super().__init__(f"{len(self.errors)} of {len(results)} prompts failed: {shown}{more}")

    @property
    def successes(self) -> dict[int, InferenceResult]:
        return {i: r for i, r in enumerate(self.results) if isinstance(r, InferenceResult)}
