"""An incremental Server-Sent Events decoder (the WHATWG event-stream format).

It takes bytes as they arrive, split anywhere, and returns whole events. Lines are split
on bytes before decoding, so a multi-byte character split across network reads is never
broken; invalid UTF-8 is replaced rather than raised. A line that arrives in many reads is
held as the pieces it came in and joined once, when its end arrives, so the time taken is
linear in its length; ``max_event_bytes`` bounds the memory one event may take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "EventTooLargeError", "ServerSentEvent", "SSEDecoder"]

DEFAULT_MAX_EVENT_BYTES = 32 * 1024 * 1024
"""The default bound on one event (32 MiB): far above any event llama-server sends (its
biggest is a final chunk that may echo a long prompt), and a bound on a stream's memory."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class EventTooLargeError(ValueError):
    """The server sent a single event larger than the decoder's ``max_event_bytes``.

    ``limit`` is that limit in bytes. ``events`` are the events the same ``feed`` call
    completed before the oversized one: decoded, but not returned. The decoder has dropped
    the bytes it held; the rest of the stream cannot be framed reliably.
    """

    def __init__(
        self, message: str, limit: int = 0, events: list[ServerSentEvent] | None = None
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.events: list[ServerSentEvent] = [] if events is None else events


class SSEDecoder:
    """Bytes in, whole events out.

    ``max_event_bytes`` bounds the bytes held for the event being built: the ``data``
    lines collected for it so far plus the line still arriving, counted as the raw bytes of
    the lines (field names included, line ends not). ``feed`` raises ``EventTooLargeError``
    as soon as that passes the limit, before buffering more. Any line longer than the limit
    raises, a comment too: a line is held whole until its end arrives. ``None``: no limit.
    """

    __slots__ = (
        "_tail",
        "_tail_len",
        "_held",
        "_limit",
        "_data",
        "_event",
        "_id",
        "_retry",
        "_after_cr",
        "_at_start",
        "_bom",
    )

    def __init__(self, max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes is not None:
            if isinstance(max_event_bytes, bool) or not isinstance(max_event_bytes, int):
                raise TypeError(
                    "max_event_bytes must be a positive int (bytes) or None (no "
                    f"limit), not {type(max_event_bytes).__name__}"
                )
            if max_event_bytes <= 0:
                raise ValueError(
                    "max_event_bytes must be a positive int (bytes) or None (no "
                    f"limit), not {max_event_bytes}"
                )
        self._limit = max_event_bytes
        # The unterminated end of the input, in the pieces it arrived in, joined only when
        # its line end comes: a line that spans many reads is copied once, not once a read.
        self._tail: list[bytes] = []
        self._tail_len = 0
        self._held = 0  # raw bytes of the data lines collected for the current event
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._after_cr = False
        self._at_start = True
        self._bom = b""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode ``chunk`` and return the events it completed.

        Raises ``EventTooLargeError`` when the event being built passes ``max_event_bytes``.
        """
        if self._at_start:
            chunk = self._strip_bom(chunk)
        if not chunk:
            return []
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the \n of a \r\n split across two reads
        self._after_cr = chunk[-1:] == b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        # Lines need checking against the limit only when this chunk could pass it.
        limit = self._limit or 0
        check = self._limit is not None and self._held + self._tail_len + len(chunk) > limit
        if b"\n" not in chunk:  # no line end: hold the piece, search nothing else
            if chunk:
                if check:
                    self._too_large([])
                self._tail.append(chunk)
                self._tail_len += len(chunk)
            return []
        lines = chunk.split(b"\n")
        rest = lines.pop()
        events: list[ServerSentEvent] = []
        if self._tail:  # the first line began in earlier reads
            if check and self._held + self._tail_len + len(lines[0]) > limit:
                self._too_large(events)
            self._tail.append(lines[0])
            lines[0] = b"".join(self._tail)
            self._tail = []
            self._tail_len = 0
        for raw in lines:
            if check and self._held + len(raw) > limit:
                self._too_large(events)
            event = self._line(raw)
            if event is not None:
                events.append(event)
        if rest:
            if check and self._held + len(rest) > limit:
                self._too_large(events)
            self._tail.append(rest)
            self._tail_len = len(rest)
        return events

    def feed_data_only(self, chunk: bytes) -> list[bytes] | None:
        """The data of the events in ``chunk`` when it holds nothing but whole events of one
        ``data: `` line each and no event is half-read: what llama-server sends in nearly
        every read. None when the full decoder is needed (``feed``), which nothing here
        has changed: the state of the decoder moves only when a list is returned."""
        if (
            self._tail
            or self._data
            or self._at_start
            or self._after_cr
            or self._event is not None
            or not chunk.startswith(b"data: ")
            or not chunk.endswith(b"\n\n")
            or b"\r" in chunk
        ):
            return None
        events = chunk[:-2].split(b"\n\n")
        if chunk.count(b"\n") != 2 * len(events):  # a line in an event that is not its data
            return None
        limit = self._limit
        for event in events:
            if not event.startswith(b"data: ") or (limit is not None and len(event) > limit):
                return None
        return [event[6:] for event in events]

    def _too_large(self, events: list[ServerSentEvent]) -> NoReturn:
        limit = self._limit or 0
        self._tail = []
        self._tail_len = 0
        self._held = 0
        self._data = []
        self._event = None
        self._retry = None
        raise EventTooLargeError(
            f"the server sent a single event larger than the limit of {limit:,} bytes "
            f"({limit / (1024 * 1024):g} MiB); to accept larger events, raise the limit with "
            "the client option max_event_bytes, e.g. "
            "LlamaCppClient(..., max_event_bytes=64 * 1024 * 1024), or None for no limit",
            limit,
            events,
        )

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
        return bool(self._tail or self._data)

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
            self._held += len(raw)
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
        self._held = 0
        self._event = None
        self._retry = None
        return event
