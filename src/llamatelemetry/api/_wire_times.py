"""When a call's request left and its answer's bytes came, as the socket saw them.

A load generator's clock read before ``create()`` and after a chunk is parsed counts the
client's own work (building the request, opening the connection, parsing) as the server's
latency: about 1.5 ms a request on a fast machine, and far more when the event loop is busy
with other streams. A `WireTimes` set in `wire_times` around a call is filled in by the
client's network layer: ``sent`` when the request's first byte is handed to the socket
(its connection already open), ``received`` when the newest bytes read of its answer reached
the machine (the kernel's own receive time, on Linux over plain TCP; then ``lag`` is how
long after it they were read) or else the process (when the event loop took them from the
socket, before any task ran for them; ``lag`` None). All on ``time.perf_counter``'s clock.
"""

from __future__ import annotations

import contextvars

__all__ = ["WireTimes", "wire_times"]


class WireTimes:
    """``sent``: the request's first byte handed to the socket; ``received``: the newest
    answer bytes' arrival (None until then), by the kernel's stamp when ``lag`` is not
    None: they were read ``lag`` seconds later."""

    __slots__ = ("lag", "received", "sent")

    def __init__(self) -> None:
        self.sent: float | None = None
        self.received: float | None = None
        self.lag: float | None = None

    @property
    def kernel(self) -> bool:
        """Whether ``received`` is the kernel's receive stamp."""
        return self.lag is not None

    def came(self, arrived: float, lag: float | None) -> None:
        """Bytes of the answer were read: they ``arrived`` then, read ``lag`` seconds
        later (None: ``arrived`` is when the read took them, no kernel stamp)."""
        self.received, self.lag = arrived, lag


wire_times: contextvars.ContextVar[WireTimes | None] = contextvars.ContextVar(
    "llamatelemetry_wire_times", default=None
)
