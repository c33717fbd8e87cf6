"""The load spread over worker processes, when one event loop cannot keep up.

One event loop reads every stream of a run; past a hundred or so streams it is busy long
enough that tokens wait in the kernel for it, and every latency reads late by that wait
(the run's ``generator delay`` says how much). `Workers` starts N processes, each with an
event loop and a client of its own, once per benchmark; each run deals its sessions to
them in turn (session k to worker k mod N, with its share of the concurrency), starts
them all at one instant a moment ahead, and merges what they measured: the records by
their numbers (the same numbering as one process gives), their ``started`` all counted
from that instant (``perf_counter`` is one clock for every process of a machine), their
CPU time added up, and their delays pooled. Each finished request is reported back as it
ends, so progress is shown as it happens.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ._delay_probe import DelayProbe
from ._load import Plan, drive, open_client
from ._records import RequestRecord

__all__ = ["STREAMS_PER_WORKER", "Workers", "auto_workers"]

log = logging.getLogger("llamatelemetry.bench")

#: ``workers="auto"``: one worker for each this many requests in flight, up to the cores.
STREAMS_PER_WORKER = 64
#: Seconds a worker process may take to start (import this package) and say it is ready.
START_TIMEOUT = 60.0


def auto_workers(in_flight: int) -> int:
    """How many workers ``auto`` means for at most ``in_flight`` requests at once: one per
    `STREAMS_PER_WORKER`, at most one per core this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, math.ceil(in_flight / STREAMS_PER_WORKER)))


class Workers:
    """``count`` worker processes sending to ``url``, each with room for ``in_flight``
    requests at once; `drive` a run on them, `close` them at the end."""

    def __init__(
        self, count: int, url: str, api_key: str | None, in_flight: int, timeout: float
    ) -> None:
        if count < 1:
            raise ValueError(f"workers must be >= 1, got {count}")
        self.count = count
        self._pipes: list[Connection] = []
        self._processes: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(count):
                # A process of its own, not multiprocessing's: that would import the
                # caller's main module again, which a script without a main guard runs.
                ours, theirs = socket.socketpair()
                process = subprocess.Popen(
                    [sys.executable, "-m", f"{__package__}._worker_main", str(theirs.fileno())],
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                )  # fmt: skip
                theirs.close()
                pipe = Connection(ours.detach())
                self._pipes.append(pipe)
                self._processes.append(process)
                pipe.send((url, api_key, in_flight, timeout))
            for pipe in self._pipes:
                if not pipe.poll(START_TIMEOUT) or pipe.recv() != "ready":
                    raise RuntimeError("a bench worker process did not start")
        except BaseException:
            self.close()
            raise

    def used(self, plan: Plan) -> int:
        """How many workers a run of ``plan`` gives sessions to."""
        parts = min(self.count, len(plan.sessions))
        if plan.cap is not None:
            parts = min(parts, plan.cap)
        return max(parts, 1)

    async def drive(
        self,
        plan: Plan,
        origin: float,
        on_request: Callable[[RequestRecord], None] | None = None,
    ) -> tuple[list[RequestRecord], float, list[float]]:
        """Run ``plan`` on the workers from ``origin``: every record (in order), the
        workers' CPU seconds, their delays."""
        parts = self.used(plan)
        loop = asyncio.get_running_loop()
        if len(self._processes) < parts or any(p.poll() is not None for p in self._processes):
            self.close()  # what one of them did of a run would be lost: none go on
            raise RuntimeError("a bench worker process ended before the run")
        try:
            for part in range(parts):
                self._pipes[part].send((plan.share(part, parts), origin))
        except OSError as exc:
            self.close()
            raise RuntimeError(f"a bench worker process could not be given its run: {exc}") from exc

        def told(record: RequestRecord) -> None:
            if on_request is not None:
                loop.call_soon_threadsafe(on_request, record)

        try:
            outcomes = await asyncio.gather(
                *(asyncio.to_thread(_collect, self._pipes[part], told) for part in range(parts))
            )
        except BaseException:
            self.close()  # a worker failed, or the run was stopped: the others' runs are lost
            raise
        records = sorted((r for found, _, _ in outcomes for r in found), key=lambda r: r.index)
        cpu = sum(spent for _, spent, _ in outcomes)
        delays = [d for _, _, waits in outcomes for d in waits]
        return records, cpu, delays

    def close(self) -> None:
        for pipe in self._pipes:
            try:
                pipe.send(None)
            except OSError:
                pass
        for process in self._processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pipe in self._pipes:
            pipe.close()
        self._pipes, self._processes = [], []


def _collect(
    pipe: Connection, told: Callable[[RequestRecord], None]
) -> tuple[list[RequestRecord], float, list[float]]:
    """A worker's messages until its run is done: each record as it ends, then those
    that never ended (unfinished, or the later turns of a failed session) and its CPU
    time and delays."""
    records: list[RequestRecord] = []
    while True:
        try:
            kind, *rest = pipe.recv()
        except EOFError:
            raise RuntimeError("a bench worker process ended during the run") from None
        if kind == "record":
            records.append(rest[0])
            told(rest[0])
        elif kind == "done":
            left, cpu, delays = rest
            return records + left, cpu, delays
        else:
            raise RuntimeError(f"a bench worker failed:\n{rest[0]}")


def work(pipe: Connection) -> None:
    """A worker process: its own event loop and client, a run for each plan it is sent;
    it ends when told to, or when the pipe to its parent closes."""
    url, api_key, in_flight, timeout = pipe.recv()
    loop = asyncio.new_event_loop()
    client = open_client(url, api_key=api_key, concurrency=in_flight, timeout=timeout)
    pipe.send("ready")
    try:
        while True:
            try:
                order = pipe.recv()
            except EOFError:
                return
            if order is None:
                return
            plan, origin = order
            try:
                loop.run_until_complete(_run(client, pipe, plan, origin))
            except Exception:  # noqa: BLE001 - told to the parent, which raises it
                pipe.send(("failed", traceback.format_exc()))
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


async def _run(client: Any, pipe: Connection, plan: Plan, origin: float) -> None:
    cpu = time.process_time()
    probe = DelayProbe()
    probe.start()
    sent: set[int] = set()  # each record goes to the parent once, as it ends if it does

    def ended(record: RequestRecord) -> None:
        pipe.send(("record", record))
        sent.add(record.index)

    try:
        records = await drive(client, plan, origin, ended)
    finally:
        delays = probe.stop()
    left = [r for r in records if r.index not in sent]
    pipe.send(("done", left, time.process_time() - cpu, delays))
