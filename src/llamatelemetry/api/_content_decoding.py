"""Content-Encoding, decoded in bounded pieces.

The client asks for ``identity`` (llama-server never compresses), so a compressed answer is
a proxy's or a hostile server's. httpx would inflate each network read whole: 64 KiB of
gzip can become 64 MiB at once, before any size check runs. Here each read is inflated at
most ``PIECE`` bytes at a time, so a limit on the decoded size is checked every 1 MiB.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

import httpx

from ._stream_body import abody, body

__all__ = ["ContentDecoder", "content", "acontent"]

PIECE = 1 << 20


class ContentDecoder:
    """Inflates gzip (any number of members, as RFC 1952 allows) or deflate (zlib-wrapped
    or raw) in pieces of at most ``PIECE`` bytes. Bytes after the end that do not start a
    member are an error, never held: they would otherwise pile up uncounted."""

    __slots__ = ("_inflate", "_encoding", "_first")

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._first = encoding == "deflate"  # zlib-wrapped or raw: told by the first bytes
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        self._inflate = zlib.decompressobj(wbits)

    def decode(self, data: bytes) -> Iterator[bytes]:
        try:
            if self._first:
                self._first = False
                try:
                    out = self._inflate.decompress(data, PIECE)
                except zlib.error:  # raw deflate, without the zlib header
                    self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                    out = self._inflate.decompress(data, PIECE)
            else:
                out = self._inflate.decompress(data, PIECE)
            while True:
                if out:
                    yield out
                if self._inflate.eof:  # the end of a member: what follows is another one
                    rest = self._inflate.unused_data
                    if not rest:
                        return
                    if self._encoding != "gzip":
                        raise zlib.error("bytes after the end of the deflate stream")
                    self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    out = self._inflate.decompress(rest, PIECE)
                    continue
                tail = self._inflate.unconsumed_tail
                if not tail:
                    return
                out = self._inflate.decompress(tail, PIECE)
        except zlib.error as exc:
            raise httpx.DecodingError(f"the {self._encoding} body is corrupt: {exc}") from None

    def flush(self) -> bytes:
        return self._inflate.flush()


def decoder_for(response: httpx.Response) -> ContentDecoder | None:
    """None for an identity body; raises ``httpx.DecodingError`` for a coding we do not
    inflate (several stacked, brotli, zstd: none of them asked for)."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return ContentDecoder("gzip")
    if encoding == "deflate":
        return ContentDecoder("deflate")
    raise httpx.DecodingError(
        f"the server compressed its answer with {encoding!r} although the client asked for identity"
    )


def content(response: httpx.Response, *, own_connection: bool = False) -> Iterator[bytes]:
    """The body's bytes as they arrive, inflated in bounded pieces when compressed.

    ``own_connection``: the connection closes after this answer (a stream), so its body
    may be read straight from the connection (see ``_stream_body``)."""
    decoder = decoder_for(response)
    raw = body(response) if own_connection else response.iter_raw()
    return raw if decoder is None else _decoded(raw, decoder)


def acontent(response: httpx.Response, *, own_connection: bool = False) -> AsyncIterator[bytes]:
    decoder = decoder_for(response)
    raw = abody(response) if own_connection else response.aiter_raw()
    return raw if decoder is None else _adecoded(raw, decoder)


def _decoded(raw: Iterator[bytes], decoder: ContentDecoder) -> Iterator[bytes]:
    for data in raw:
        yield from decoder.decode(data)
    rest = decoder.flush()
    if rest:
        yield rest


async def _adecoded(raw: AsyncIterator[bytes], decoder: ContentDecoder) -> AsyncIterator[bytes]:
    async for data in raw:
        for piece in decoder.decode(data):
            yield piece
    rest = decoder.flush()
    if rest:
        yield rest
