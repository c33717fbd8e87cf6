"""An incremental Server-Sent Events decoder (the WHATWG event-stream format).

It takes bytes as they arrive, split anywhere, and returns whole events. Lines are split
on bytes before decoding, so a multi-byte character split across network reads is never
broken; invalid UTF-8 is replaced rather than raised.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServerSentEvent", "SSEDecoder"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    __slots__ = ("_buffer", "_data", "_event", "_id", "_retry", "_after_cr", "_at_start", "_bom")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._after_cr = False
        self._at_start = True
        self._bom = b""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode ``chunk`` and return the events it completed."""
        if self._at_start:
            chunk = self._strip_bom(chunk)
        if not chunk:
            return []
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the \n of a \r\n split across two reads
        self._after_cr = chunk[-1:] == b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        events: list[ServerSentEvent] = []
        for raw in lines:
            event = self._line(raw)
            if event is not None:
                events.append(event)
        return events

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Drop a UTF-8 byte order mark at the very start, even split across reads."""
        data = self._bom + chunk
        if len(data) < 3 and b"\xef\xbb\xbf".startswith(data):
            self._bom = data
            return b""
        self._at_start = False
        self._bom = b""
        return data[3:] if data.startswith(b"\xef\xbb\xbf") else data

    @property
    def pending(self) -> bool:
        """True when bytes of an event that was never terminated are held back."""
        return bool(self._buffer or self._data)

    def _line(self, raw: bytes) -> ServerSentEvent | None:
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", errors="replace")
        if line[0] == ":":
            return None  # comment / keep-alive ping
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:  # an event with no data is dropped, as the standard says
            self._event = None
            return None
        event = ServerSentEvent("\n".join(self._data), self._event, self._id, self._retry)
        self._data = []
        self._event = None
        self._retry = None
        return event
