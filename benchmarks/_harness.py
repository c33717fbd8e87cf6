"""Side-by-side timing: candidates run interleaved in rounds on the same server, so drift
(CPU frequency, other load) hits them alike; medians of per-round means are compared.

Each round also takes this process's CPU time per op (all its threads: a candidate's
background work counts): the client's own cost, which other load on a shared machine does
not inflate."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Result", "compare", "machine"]


@dataclass
class Result:
    name: str
    per_op_s: list[float]
    cpu_per_op_s: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.per_op_s)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_per_op_s)


def compare(
    candidates: dict[str, Callable[[], object]], *, ops: int, rounds: int, warmup: int = 20
) -> dict[str, Result]:
    """Time ``ops`` calls of each candidate per round, alternating candidates each round."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    results = {name: Result(name, []) for name in candidates}
    names = list(candidates)
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            fn = candidates[name]
            started, started_cpu = time.perf_counter(), time.process_time()
            for _ in range(ops):
                fn()
            results[name].cpu_per_op_s.append((time.process_time() - started_cpu) / ops)
            results[name].per_op_s.append((time.perf_counter() - started) / ops)
    return results


def machine() -> str:
    return f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"


def report(title: str, results: dict[str, Result], baseline: str, target: str) -> float:
    base = results[baseline].median
    print(f"\n{title}")
    for result in results.values():
        print(
            f"  {result.name:<28} {result.median * 1e3:9.3f} ms/op  "
            f"ratio {result.median / base:5.3f}"
        )
    ratio = [r for n, r in ((n, r.median / base) for n, r in results.items()) if n != baseline][0]
    print(f"  target: {target}")
    return ratio
