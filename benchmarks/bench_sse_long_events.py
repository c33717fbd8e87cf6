"""Long events: one Server-Sent Event of 2, 16 and 64 MiB (``data: `` and a JSON string of
that size, then a blank line) decoded in memory from 64 KiB reads, as a long line arrives
from the network; ``SSEDecoder(max_event_bytes=None)`` against the decoder's previous feed
loop, which joined the held line with every read (quadratic), interleaved.

    python benchmarks/bench_sse_long_events.py [--runs 5] [--sizes 2,16,64] [--old-sizes 2,16]

No server: the events are built in memory. The previous loop runs only for the sizes in
``--old-sizes`` (at 64 MiB it takes about a minute per run). Figures: median wall and process
CPU seconds per decode, and how the time grows with the size (linear: 16 MiB / 2 MiB = 8).

Target: linear time; the per-byte cost at 64 MiB within 1.5x of that at 2 MiB.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from _harness import Result, compare, machine

from llamatelemetry.api._sse import ServerSentEvent, SSEDecoder

MIB = 1024 * 1024
READ_SIZE = 64 * 1024
TEXT = 'A llama walks into a bar. "Long prompt", it says; the bartender echoes it back.\n'


class PreviousFeedLoop(SSEDecoder):
    """THE PEER, NOT THE LIBRARY: ``SSEDecoder.feed`` as it was up to commit 381566d, kept
    here for comparison only. It joins the held, unterminated line with each read and splits
    the whole again, so a line that arrives in n reads is copied n times: O(n^2). The line
    handling (``_line``, ``_dispatch``, the BOM) is the library's, shared."""

    def __init__(self) -> None:
        super().__init__(max_event_bytes=None)
        self._buffer = b""  # a subclass without __slots__ has a __dict__ for this

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._at_start:
            chunk = self._strip_bom(chunk)
        if not chunk:
            return []
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._after_cr = chunk[-1:] == b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = (self._buffer + chunk).split(b"\n")  # the quadratic step
        self._buffer = lines.pop()
        events: list[ServerSentEvent] = []
        for raw in lines:
            event = self._line(raw)
            if event is not None:
                events.append(event)
        return events


def event_bytes(size: int) -> bytes:
    """``data: <a JSON string>\\n\\n``, the JSON string (quotes and escapes included) being
    ``size`` bytes long: the text repeated, then spaces to the size."""
    fragment = json.dumps(TEXT)[1:-1].encode()
    body = fragment * ((size - 2) // len(fragment))
    encoded = b'"' + body + b" " * (size - 2 - len(body)) + b'"'
    assert len(encoded) == size and isinstance(json.loads(encoded), str)
    return b"data: " + encoded + b"\n\n"


def unlimited() -> SSEDecoder:
    """The library's decoder, without the event size limit."""
    return SSEDecoder(max_event_bytes=None)


def decoding(make: Callable[[], SSEDecoder], reads: list[bytes], size: int) -> Callable[[], int]:
    def run() -> int:
        decoder = make()
        events = [event for read in reads for event in decoder.feed(read)]
        assert len(events) == 1 and len(events[0].data) == size
        return hash(events[0].data)

    return run


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="decodes of each event per candidate")
    parser.add_argument("--sizes", type=sizes, default=[2, 16, 64], help="MiB, comma-separated")
    parser.add_argument(
        "--old-sizes",
        type=sizes,
        default=[2, 16],
        help="MiB: the sizes the previous (quadratic) loop also decodes",
    )
    args = parser.parse_args()

    print(
        f"SSE decoding of one long event in {READ_SIZE // 1024} KiB reads — {machine()}; "
        f"median of {args.runs} runs"
    )
    new: dict[int, Result] = {}
    old: dict[int, Result] = {}
    for mib in args.sizes:
        data = event_bytes(mib * MIB)
        reads = [data[i : i + READ_SIZE] for i in range(0, len(data), READ_SIZE)]
        candidates: dict[str, Callable[[], object]] = {"new": decoding(unlimited, reads, mib * MIB)}
        if mib in args.old_sizes:
            candidates["previous"] = decoding(PreviousFeedLoop, reads, mib * MIB)
            assert candidates["new"]() == candidates["previous"](), "the decoders disagree"
        results = compare(candidates, ops=1, rounds=args.runs, warmup=1)
        del data, reads
        new[mib] = results["new"]
        line = (
            f"\n{mib:3d} MiB  new       wall {new[mib].median:8.3f} s   "
            f"cpu {new[mib].cpu_median:8.3f} s   {mib / new[mib].median:7.1f} MiB/s"
        )
        if "previous" in results:
            old[mib] = results["previous"]
            line += (
                f"\n         previous  wall {old[mib].median:8.3f} s   "
                f"cpu {old[mib].cpu_median:8.3f} s   {mib / old[mib].median:7.1f} MiB/s"
                f"   previous / new x{old[mib].median / new[mib].median:.1f}"
            )
        print(line, flush=True)

    base = min(args.sizes)
    print(f"\ngrowth with the size (time at N MiB / time at {base} MiB; linear = N / {base})")
    for name, table in (("new", new), ("previous", old)):
        if base not in table:
            continue
        for mib in sorted(table):
            if mib == base:
                continue
            wall = table[mib].median / table[base].median
            cpu = table[mib].cpu_median / table[base].cpu_median
            print(
                f"  {name:<9} {mib:3d}/{base} MiB   wall x{wall:7.2f}   cpu x{cpu:7.2f}   "
                f"(linear x{mib / base:.0f})"
            )
    if base in new and len(new) > 1:
        top = max(new)
        per_byte = (new[top].cpu_median / top) / (new[base].cpu_median / base)
        good = per_byte <= 1.5
        print("\nverdict")
        print(
            f"  {f'new, cpu per byte at {top} MiB / at {base} MiB':<44} {per_byte:7.3f}   "
            f"target <= 1.50   {'OK' if good else 'MISS'}"
        )


if __name__ == "__main__":
    main()
