"""When a measured call's request left and its answer's bytes came (`WireTimes`), with the
blocking client: read off a plain TCP socket, each read carries the kernel's receive time
(Linux), so a reader that gets to a token late (a busy thread, a gevent user waiting for
the others) still times it when it came; over TLS, and where the kernel gives no stamp,
the time the read returned. Against the exact-time server, whose token times are known."""

from __future__ import annotations

import time

import pytest

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.api._internal import WireTimes, wire_times
from llamatelemetry.api._socket_stream import KERNEL_STAMPS
from llamatelemetry.testing._exact_server import ExactTimeServer


def first_token_read_late(url: str) -> WireTimes:
    """One streamed answer whose first token (due 0.05 s in) is read 0.2 s in."""
    times = WireTimes()
    token = wire_times.set(times)
    try:
        with LlamaCppClient(url, max_retries=0) as client:
            stream = client.chat.completions.create(
                messages=[{"role": "user", "content": "hi"}], max_tokens=1, stream=True
            )
            with stream:
                time.sleep(0.2)  # the thread is busy: the token waits in the socket
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        return times
    finally:
        wire_times.reset(token)
    raise AssertionError("no token")


@pytest.mark.skipif(not KERNEL_STAMPS, reason="the kernel stamps received bytes on Linux")
def test_a_blocking_read_times_a_token_by_the_kernel_s_stamp() -> None:
    with ExactTimeServer(ttft=0.05, itl=0.0) as server:
        times = first_token_read_late(server.url)
        [record] = server.records().values()
    assert times.kernel and times.received is not None and times.sent is not None
    assert 0 <= times.received - record.writes[0] < 0.002, times.received - record.writes[0]
    assert times.lag > 0.1  # read that much later
    assert times.sent <= record.arrived


def test_a_call_without_wire_times_reads_as_before() -> None:
    """Unmeasured calls on the same client are not read the stamped way."""
    with ExactTimeServer(ttft=0.0, itl=0.0) as server, LlamaCppClient(server.url) as client:
        stream = client.chat.completions.create(
            messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
        )
        with stream:
            assert sum(1 for c in stream if c.choices and c.choices[0].delta.content) == 3


def test_a_client_made_during_a_measured_call_leaves_its_times_alone() -> None:
    """The first client checks its fast paths with requests in memory: in a context of
    their own, not the measured call's (whose request they are not)."""
    from llamatelemetry.api._deadline_backend import ASYNC_BACKEND, SYNC_BACKEND

    times = WireTimes()
    token = wire_times.set(times)
    try:
        for path in (SYNC_BACKEND, ASYNC_BACKEND):
            path.forget()
            assert path.trusted
    finally:
        wire_times.reset(token)
    assert times.sent is None and times.received is None
