"""What a benchmark found: every run's `RunResult`, the capacity a search found, and the
JSON report (what ``llamatelemetry bench --json`` prints) made of them."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

from ._config import BenchConfig
from ._records import METRIC_DEFINITIONS, METRICS, RunResult
from ._slo import capacity_bounded

__all__ = ["BenchReport"]


@dataclass(frozen=True)
class BenchReport:
    """One benchmark: its settings, the server it loaded (``url``, any password left out;
    ``started_server``: what the server it started says it has), when it began, the
    prompts' description, each run in order (``runs``: levels, repeats, then a capacity
    search's own) and the highest load found to meet the SLO (``capacity``)."""

    config: BenchConfig
    url: str
    started_at: str
    runs: tuple[RunResult, ...]
    prompts: dict[str, Any]
    capacity: float | None = None
    started_server: dict[str, Any] | None = None
    gpu_unavailable: str | None = None  # --gpu asked, and why no GPU could be sampled

    @property
    def model(self) -> str | None:
        """The model the server answered with."""
        return next((r.model for r in self.runs if r.model), None)

    @property
    def requests(self) -> int:
        """The measured requests every run sent (or scheduled) in all."""
        return sum(r.requests for r in self.runs)

    @property
    def completed(self) -> int:
        """The measured requests that completed, in all runs."""
        return sum(r.completed for r in self.runs)

    @property
    def capacity_bounded(self) -> bool:
        """Whether a higher load than ``capacity`` was tried and missed the SLO (else the
        capacity is only a lower bound)."""
        slo, searched = self.config.slo, self.config.find_capacity
        if slo is None or searched is None:
            return False
        return capacity_bounded(self.capacity, searched, list(self.runs), slo)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: settings, machine, the figures' definitions, every run."""
        slo = self.config.slo
        runs = []
        for result in self.runs:
            run = result.to_dict()
            if slo is not None:
                run["slo"] = slo.evaluate(result).to_dict()
            runs.append(run)
        searched = self.config.find_capacity
        found = None
        if searched is not None:
            found = {
                "by": searched,
                "highest_meeting_slo": self.capacity,
                "bounded": self.capacity_bounded,
            }
        return {
            "url": self.url,
            "model": self.model,
            "started_at": self.started_at,
            "machine": f"{platform.machine()}, {platform.system()}, "
            f"Python {platform.python_version()}",
            "config": self.config.to_dict(),
            "started_server": self.started_server,
            "gpu_unavailable": self.gpu_unavailable,
            "prompts": self.prompts,
            # Other tools give these names to other figures: what each one is here.
            "metric_definitions": {f"{m}_ms": METRIC_DEFINITIONS[m] for m in METRICS},
            "slo": None if slo is None else slo.to_dict(),
            "capacity": found,
            "runs": runs,
        }
