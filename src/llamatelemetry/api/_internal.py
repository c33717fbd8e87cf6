"""What llamatelemetry's other layers (telemetry, server, bench, cli) may use of the api
layer beyond its public API: a narrow seam, so the api's modules can change shape without
their neighbours noticing. Users should not import it; nothing here is stable for them.

- Calls: a resource describes one request as a :class:`Call` (or several as a :data:`Flow`);
  the call builders here are the ones the client's own methods use, so the engine sends
  exactly what the client would.
- Clients: what the other layers need of one is :class:`Caller` (:class:`AsyncCaller`):
  ``execute_call`` runs every call (telemetry wraps it: an instrumented client overrides
  it, the instrumentor patches it on the class), ``send_call`` is the transport under it
  (telemetry sends through it, so a call is never recorded twice), ``run_flow`` runs a flow.
- Streams: a call's stream is an :class:`ObservableStream`; telemetry watches it through
  its ``observe(observer)`` (a :class:`StreamObserver`) and reads its ``accumulator``.
- Validation: the checks behind the client's own ``TypeError``/``ValueError`` messages.
- Answers: llama.cpp's ``timings`` of any client's answer or chunk (`timings_of`), this
  package's ``Timings`` or the plain dict another SDK keeps of the field.
- URLs: the host and port a base URL reaches (`host_and_port`), which name a server in
  telemetry and tell servers apart on the command line.
- Wire times: when a call's request left and its answer's bytes came, as the socket saw
  them (`WireTimes`, set in `wire_times` around the call): what the load generator times by.
- Server options: what a refusal asks the server to be started with (`missing_server_option`),
  so the command line can name the flag where the client's ``hint`` names the keyword.
"""

from __future__ import annotations

from ._api_errors import ServerOption, missing_server_option
from ._calls_and_callers import (
    Accumulator,
    AsyncCaller,
    Call,
    Caller,
    Flow,
    ObservableStream,
    Sleep,
    StreamObserver,
)
from ._config import (
    API_KEY_ENV,
    BASE_URL_ENV,
    ClientOptions,
    TimeoutTypes,
    check_options,
    host_and_port,
)
from ._deadline_backend import call_deadline
from ._types import timings_of
from ._validation import check_int, check_messages, check_number, check_text, check_texts
from ._wire_times import WireTimes, wire_times
from .resources.chat import chat_call
from .resources.completions import complete_call
from .resources.embeddings import embed_flow
from .resources.models import model_state

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "ClientOptions",
    "check_options",
    "host_and_port",
    "timings_of",
    "current_deadline",
    "Call",
    "Flow",
    "Sleep",
    "Caller",
    "AsyncCaller",
    "TimeoutTypes",
    "Accumulator",
    "ObservableStream",
    "StreamObserver",
    "check_int",
    "check_messages",
    "check_number",
    "check_text",
    "check_texts",
    "chat_call",
    "complete_call",
    "embed_flow",
    "model_state",
    "ServerOption",
    "missing_server_option",
    "WireTimes",
    "wire_times",
]


def current_deadline() -> float | None:
    """When the innermost ``deadline()`` block around this code ends (``time.monotonic()``)."""
    return call_deadline.get()
