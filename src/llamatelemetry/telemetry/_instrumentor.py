"""``LlamaCppInstrumentor``: telemetry for every plain ``LlamaCppClient`` and
``AsyncLlamaCppClient`` in the process, and for the openai SDK's ``OpenAI`` and
``AsyncOpenAI`` clients when it is installed (see ``_openai_sdk``).

```python
from llamatelemetry.telemetry import LlamaCppInstrumentor

LlamaCppInstrumentor().instrument(tracer_provider=..., meter_provider=...)
...
LlamaCppInstrumentor().uninstrument()
```

It follows opentelemetry-instrumentation's ``BaseInstrumentor`` (a singleton, idempotent
``instrument``/``uninstrument``, providers as keyword arguments) and needs the
``opentelemetry-instrumentation`` package (in the ``otel`` extra).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from ..api import AsyncLlamaCppClient, LlamaCppClient
from ..api._internal import Call
from ._call_recorder import CallRecorder
from ._core import Telemetry
from ._openai_sdk import SdkTelemetry

__all__ = ["LlamaCppInstrumentor"]

log = logging.getLogger("llamatelemetry.telemetry")

_instruments = ("llamatelemetry >= 0.1",)


# The method every call of a client goes through (the api layer's ``Caller`` seam).
_WRAPPED = "execute_call"
Make = Callable[[Any, "_Patch"], Any]  # (what was there, the patch) -> the wrapper


class _Patch:
    """One wrapper this instrumentor put on a class's method, and what was there before it
    (the class's own, one it inherits, or another library's wrapper)."""

    __slots__ = ("cls", "name", "own", "previous", "wrapper", "telemetry")

    def __init__(self, cls: type, name: str, telemetry: Any, make: Make) -> None:
        self.cls, self.name = cls, name
        self.own = name in cls.__dict__  # else inherited: removing ours restores that
        self.previous: Any = getattr(cls, name)
        self.telemetry: Any = telemetry
        self.wrapper = make(self.previous, self)
        self.wrapper.__wrapped__ = self.previous
        setattr(cls, name, self.wrapper)

    def remove(self) -> None:
        """Take this wrapper out: restore what it wrapped when it is still the outermost;
        when another library wrapped it since, leave their wrapper in place and make ours a
        plain pass-through (removing it would remove theirs too)."""
        self.telemetry = None
        if self.cls.__dict__.get(self.name) is self.wrapper:
            if self.own:
                setattr(self.cls, self.name, self.previous)
            else:
                delattr(self.cls, self.name)


def _execute_call(previous: Any, patch: _Patch) -> Any:
    def wrapper(client: Any, call: Call[Any]) -> Any:
        telemetry = patch.telemetry
        if telemetry is None:  # uninstrumented under someone else's wrapper
            return previous(client, call)
        return telemetry.execute(client, call, previous)

    return wrapper


def _execute_call_async(previous: Any, patch: _Patch) -> Any:
    async def wrapper(client: Any, call: Call[Any]) -> Any:
        telemetry = patch.telemetry
        if telemetry is None:
            return await previous(client, call)
        return await telemetry.execute_async(client, call, previous)

    return wrapper


def _request(previous: Any, patch: _Patch) -> Any:
    def wrapper(client: Any, cast_to: Any, options: Any, /, *args: Any, **kwargs: Any) -> Any:
        telemetry = patch.telemetry
        if telemetry is None:
            return previous(client, cast_to, options, *args, **kwargs)
        return telemetry.request(previous, client, cast_to, options, args, kwargs)

    return wrapper


def _request_async(previous: Any, patch: _Patch) -> Any:
    async def wrapper(client: Any, cast_to: Any, options: Any, /, *args: Any, **kwargs: Any) -> Any:
        telemetry = patch.telemetry
        if telemetry is None:
            return await previous(client, cast_to, options, *args, **kwargs)
        return await telemetry.arequest(previous, client, cast_to, options, args, kwargs)

    return wrapper


#: The oldest openai SDK whose calls are instrumented (the ``request`` every call goes
#: through, with its ``stream_cls``; tested down to 1.55.3, the oldest that runs on
#: httpx 0.28).
OPENAI_SDK_MIN = (1, 55)


def _supported(openai: Any) -> bool:
    """Whether the installed openai SDK is one this instrumentation knows; if not, one
    warning says so, and its calls go on unobserved."""
    version = str(getattr(openai, "__version__", ""))
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if len(found) == 2 and found >= OPENAI_SDK_MIN and hasattr(openai, "AsyncOpenAI"):
        return True
    oldest = ".".join(map(str, OPENAI_SDK_MIN))
    log.warning(
        "the openai SDK %s is older than %s: its calls are not instrumented (upgrade it: "
        "pip install 'openai>=%s')",
        version or "(no version)",
        oldest,
        oldest,
    )
    return False


class LlamaCppInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Patch ``LlamaCppClient`` (and the openai SDK's clients, when installed: their chat,
    completions and embeddings calls) so each call is a span with GenAI metrics; results
    are unchanged. Keyword arguments: ``tracer_provider``, ``meter_provider``,
    ``logger_provider`` (for the operation-details event), ``capture_content`` (default:
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).

    ``uninstrument()`` removes only this instrumentor's own wrapper: a wrapper another
    library put on the same method, before or after, stays where it is.
    """

    _patches: list[_Patch] = []

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        telemetry = Telemetry(
            CallRecorder(
                tracer_provider=kwargs.get("tracer_provider"),
                meter_provider=kwargs.get("meter_provider"),
                logger_provider=kwargs.get("logger_provider"),
                capture_content=kwargs.get("capture_content"),
            )
        )
        self._patches = [
            _Patch(LlamaCppClient, _WRAPPED, telemetry, _execute_call),
            _Patch(AsyncLlamaCppClient, _WRAPPED, telemetry, _execute_call_async),
        ]
        try:
            import openai
        except ImportError:  # the SDK is not installed: our clients only
            return
        if not _supported(openai):
            return
        sdk = SdkTelemetry(telemetry.recorder)
        self._patches += [
            # ``request``, looked up on the client at every call (the resources keep the
            # ``post`` they were made with: a client used before instrumenting is still seen)
            _Patch(openai.OpenAI, "request", sdk, _request),
            _Patch(openai.AsyncOpenAI, "request", sdk, _request_async),
        ]

    def _uninstrument(self, **kwargs: Any) -> None:
        for patch in self._patches:
            patch.remove()
        self._patches = []
