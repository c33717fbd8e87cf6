"""What a benchmark run is asked to do, checked whole before anything starts.

`BenchConfig` holds every setting of a run (the server, the load, the prompts, the
objectives) and refuses a combination that cannot mean anything (``duration`` without a
rate, a capacity search without an SLO, a replay without a trace) with a
`BenchConfigError` that says what to fix. ``llamatelemetry bench`` builds one from its
options and words the same error with its flags; Python code builds one directly and
gives it to `run_benchmark`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter
from typing import Any, Literal

from ..api import DEFAULT_BASE_URL
from ._distribution_summary import DEFAULT_PERCENTILES, percentiles_problem
from ._endpoints import DEFAULT_DOCUMENTS, ENDPOINTS, GENERATING
from ._prompts import Item, Prompt, load_prompts_file
from ._schedule import Arrivals, burstiness_problem
from ._slo import SLO

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_PROMPT_TOKENS",
    "DEFAULT_REQUESTS",
    "MAX_CONCURRENCY",
    "MAX_RATE",
    "MAX_WORKERS",
    "MIN_RATE",
    "BenchConfig",
    "BenchConfigError",
]

DEFAULT_REQUESTS = 32
DEFAULT_PROMPT_TOKENS = 128
DEFAULT_MAX_TOKENS = 128
MAX_CONCURRENCY = 4096
MAX_WORKERS = 256
MAX_DOCUMENTS = 4096
MIN_RATE = 0.001  # requests per second: one in about 17 minutes
MAX_RATE = 1e6
MAX_REPEAT = 100  # also the most turns of a session
MAX_OUTPUT_TOKENS = 2**31 - 1  # llama.cpp reads max_tokens into an int32

#: How a message names a setting where its field's name would not say it.
_PYTHON_NAMES = {"no_stream": "stream=False"}


class BenchConfigError(ValueError):
    """Settings of a benchmark that cannot run together (or a value one cannot take).

    The message names the settings involved as `BenchConfig` spells them; `worded` names
    them as another interface does, so that the command line prints its own flags.
    ``settings`` lists them, in the order the message names them."""

    def __init__(self, template: str, **values: str) -> None:
        self.template = template
        self.values = values
        names = (name for _, name, _, _ in Formatter().parse(template) if name)
        self.settings = tuple(dict.fromkeys(n for n in names if n not in values))
        super().__init__(self.worded())

    def worded(self, spell: Callable[[str], str] | None = None) -> str:
        """The message, each setting named by ``spell`` (by default: its field's name)."""
        spelled = {s: spell(s) if spell else _PYTHON_NAMES.get(s, s) for s in self.settings}
        return self.template.format_map({**spelled, **self.values})


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run: where it sends, what, how fast, and what counts as good enough.

    The server is ``url`` (default ``http://127.0.0.1:8080``), or one started for the run
    from the GGUF file ``model`` (with ``ctx_size`` and ``threads``), stopped at its end.
    The load is closed loop at each of ``concurrency`` (requests in flight at once),
    then open loop at each of ``rates`` (requests per second on average, gaps of gamma
    shape ``burstiness``, after ``ramp_up`` seconds, for ``duration`` seconds or
    ``requests`` requests, at most ``max_concurrency`` in flight); ``concurrency`` None
    means one request at a time unless ``rates``, ``replay`` or ``find_capacity`` say
    what to run. Every level sends ``requests`` requests (sessions of ``turns`` turns),
    after ``warmup`` unmeasured ones, ``repeat`` times.

    Prompts are synthetic, ``prompt_tokens`` long as the server counts them (±
    ``length_spread``, with ``shared_prefix`` tokens alike in all), or those of
    ``prompts_file`` (JSONL or ShareGPT), read and checked whole when the configuration
    is made; ``replay`` sends that file's timestamped requests at their recorded times.
    ``slo`` is what every request should meet (goodput), and ``find_capacity`` ("rate" or
    "concurrency") searches the highest load that still meets it. ``workers`` spreads the
    load over that many processes, each with its own event loop ("auto": one for each 64
    requests in flight, up to the cores). ``percentiles`` are those of every latency the
    reports give (50, 90 and 99 by default; the JSON also always has the median, p90 and
    p99). ``endpoint`` is what each request calls (chat, completions, responses,
    messages, embeddings, rerank; a rerank query against ``documents`` documents).

    Making one checks every rule between the settings: a `BenchConfigError` says which
    settings clash and how to fix it.
    """

    url: str | None = None
    api_key: str | None = None
    model: Path | None = None
    ctx_size: int | None = None
    threads: int | None = None
    requests: int = DEFAULT_REQUESTS
    concurrency: Sequence[int] | None = None
    prompt_tokens: int | None = None
    prompts_file: Path | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    ignore_eos: bool = False
    stream: bool = True
    temperature: float | None = None
    seed: int | None = None
    warmup: int = 1
    timeout: float = 600.0
    rates: Sequence[float] = ()
    burstiness: float = 1.0
    duration: float | None = None
    ramp_up: float = 0.0
    max_concurrency: int | None = None
    shared_prefix: int = 0
    slo: SLO | None = None
    find_capacity: Literal["rate", "concurrency"] | None = None
    scrape_interval: float = 1.0
    gpu: bool = False  # sample the machine's NVIDIA GPUs during each run
    turns: int = 1
    # processes sending the load, each with its event loop ("auto": one per 64 requests in
    # flight, up to the cores)
    workers: int | Literal["auto"] = 1
    percentiles: Sequence[float] = DEFAULT_PERCENTILES  # of every latency, in the reports
    endpoint: str = "chat"  # what each request calls: one of ENDPOINTS
    documents: int = DEFAULT_DOCUMENTS  # rerank: the documents each query is ranked against
    replay: bool = False
    length_spread: float = 0.0
    repeat: int = 1
    _prompts: list[Item] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.concurrency is not None:
            set_(self, "concurrency", tuple(self.concurrency))
        set_(self, "rates", tuple(self.rates))
        if self.model is not None:
            set_(self, "model", Path(self.model))
        if self.prompts_file is not None:
            set_(self, "prompts_file", Path(self.prompts_file))
        self._check_values()
        self._check_combinations()
        if self.prompts_file is not None:
            set_(self, "_prompts", self._load_prompts(self.prompts_file))

    # -- what the run does, the defaults applied ------------------------------------------

    @property
    def target(self) -> str:
        """The server's URL (with ``model``: none yet, the started server's is used)."""
        return self.url or DEFAULT_BASE_URL

    @property
    def open_loop(self) -> bool:
        """Whether some run has no fixed concurrency: rates, a replay or a search."""
        return bool(self.rates or self.find_capacity or self.replay)

    @property
    def levels(self) -> tuple[int, ...]:
        """The closed-loop levels that run: ``concurrency``, else 1 unless something else
        was asked for."""
        if self.concurrency is not None:
            return tuple(self.concurrency)
        return () if self.open_loop else (1,)

    @property
    def requests_per_run(self) -> int:
        """``requests``; with ``replay``, the whole trace."""
        if self.replay and self._prompts is not None:
            return len(self._prompts)
        return self.requests

    @property
    def synthetic_tokens(self) -> int:
        """The synthetic prompts' length: ``prompt_tokens``, or its default."""
        return self.prompt_tokens or DEFAULT_PROMPT_TOKENS

    @property
    def file_prompts(self) -> list[Item] | None:
        """The prompts ``prompts_file`` holds (None: synthetic prompts)."""
        return self._prompts

    def arrivals(self, rate: float, seed: int | None = None) -> Arrivals:
        """The open-loop schedule of one run at ``rate``."""
        return Arrivals(rate, self.burstiness, self.ramp_up, self.duration, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a report records them (the defaults applied; no server, no
        key)."""
        return {
            "requests": self.requests_per_run,
            "concurrency": list(self.levels),
            "rates": list(self.rates),
            "burstiness": self.burstiness,
            "ramp_up": self.ramp_up,
            "duration": self.duration,
            "prompt_tokens": None if self._prompts else self.synthetic_tokens,
            "shared_prefix": self.shared_prefix,
            "prompts_file": str(self.prompts_file) if self.prompts_file else None,
            "find_capacity": self.find_capacity,
            "scrape_interval": self.scrape_interval,
            "gpu": self.gpu,
            "repeat": self.repeat,
            "replay": self.replay,
            "length_spread": self.length_spread,
            "max_tokens": self.max_tokens,
            "stream": self.stream,
            "temperature": self.temperature,
            "seed": self.seed,
            "ignore_eos": self.ignore_eos,
            "warmup": self.warmup,
            "max_concurrency": self.max_concurrency,
            "turns": self.turns,
            "workers": self.workers,
            "percentiles": list(self.percentiles),
            "endpoint": self.endpoint,
            "documents": self.documents if self.endpoint == "rerank" else None,
        }

    # -- the rules --------------------------------------------------------------------------

    def _check_values(self) -> None:
        """Each setting on its own: what the command line's option types check."""
        for name, low, high in (
            ("requests", 1, math.inf),
            ("prompt_tokens", 1, math.inf),
            ("max_tokens", 1, MAX_OUTPUT_TOKENS),
            ("warmup", 0, math.inf),
            ("max_concurrency", 1, math.inf),
            ("shared_prefix", 0, math.inf),
            ("turns", 1, MAX_REPEAT),
            ("repeat", 1, MAX_REPEAT),
            ("ctx_size", 0, math.inf),
            ("threads", 1, math.inf),
        ):
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                bound = f">= {low}" if high == math.inf else f"within {low}..{high}"
                raise BenchConfigError(f"{{{name}}} must be {bound}, got {value}")
        for level in self.concurrency or ():
            if not 1 <= level <= MAX_CONCURRENCY:
                raise BenchConfigError(
                    f"{{concurrency}} {level} is not within 1..{MAX_CONCURRENCY}"
                )
        for rate in self.rates:
            if not MIN_RATE <= rate < MAX_RATE:  # NaN fails here too
                raise BenchConfigError(
                    f"{{rates}} {rate:g} is not a rate of {MIN_RATE:g} to 1e6 requests per second"
                )
        for name, positive in (("timeout", True), ("duration", True), ("temperature", False),
                               ("ramp_up", False), ("scrape_interval", False)):  # fmt: skip
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise BenchConfigError(f"{{{name}}} must be a finite number >= 0, got {value}")
            if positive and value == 0:
                raise BenchConfigError(f"{{{name}}} must be > 0 seconds, got {value}")
        if not 0 <= self.length_spread < 1:
            raise BenchConfigError(
                f"{{length_spread}} must be within [0, 1), got {self.length_spread}"
            )
        if self.workers != "auto" and (
            isinstance(self.workers, bool)
            or not isinstance(self.workers, int)
            or not 1 <= self.workers <= MAX_WORKERS
        ):
            raise BenchConfigError(
                f"{{workers}} is 'auto' or a number within 1..{MAX_WORKERS}, got {self.workers!r}"
            )
        if self.endpoint not in ENDPOINTS:
            raise BenchConfigError(
                f"{{endpoint}} is one of {', '.join(ENDPOINTS)}, got {self.endpoint!r}"
            )
        if isinstance(self.documents, bool) or not 1 <= self.documents <= MAX_DOCUMENTS:
            raise BenchConfigError(
                f"{{documents}} must be within 1..{MAX_DOCUMENTS}, got {self.documents}"
            )
        problem = percentiles_problem(self.percentiles)
        if problem is not None:
            raise BenchConfigError(f"{{percentiles}}: {problem}")
        problem = burstiness_problem(self.burstiness)
        if problem is not None:
            raise BenchConfigError(f"{{burstiness}} {self.burstiness:g}: {problem}")
        if self.find_capacity not in (None, "rate", "concurrency"):
            raise BenchConfigError(
                f"{{find_capacity}} is 'rate' or 'concurrency', got {self.find_capacity!r}"
            )

    def _check_combinations(self) -> None:
        """The rules between settings: each refusal names what to drop or add."""
        if self.model is not None and self.url is not None:
            raise BenchConfigError("{url} and {model}: use one ({model} starts its own server)")
        if self.model is not None and self.api_key is not None:
            raise BenchConfigError(
                "{api_key} is for the server at {url}: the one {model} starts has none"
            )
        if self.model is None and (self.ctx_size is not None or self.threads is not None):
            raise BenchConfigError("{ctx_size} and {threads} are for the server {model} starts")
        if self.prompts_file is not None and self.prompt_tokens is not None:
            raise BenchConfigError("{prompt_tokens} and {prompts_file}: use one")
        if self.prompts_file is not None and self.shared_prefix:
            raise BenchConfigError("{shared_prefix} is for synthetic prompts, not {prompts_file}")
        if not self.rates and self.find_capacity != "rate":
            for name, given in (("duration", self.duration is not None),
                                ("ramp_up", self.ramp_up > 0),
                                ("burstiness", self.burstiness != 1.0),
                                ("max_concurrency", self.max_concurrency is not None)):  # fmt: skip
                if given:
                    raise BenchConfigError(f"{{{name}}} is for open-loop runs: add {{rates}}")
        for rate in self.rates:  # a schedule of more requests than one can hold is refused now
            try:
                self.arrivals(rate)
            except ValueError as exc:
                raise BenchConfigError("{rates} {rate}: {problem}", rate=f"{rate:g}",
                                       problem=str(exc)) from None  # fmt: skip
        if self.find_capacity is not None and self.slo is None:
            raise BenchConfigError(
                "{find_capacity} searches for the highest load meeting {slo}: add {slo}"
            )
        if self.slo is not None and self.slo.needs_stream and not self.stream:
            raise BenchConfigError(
                "{slo} with ttft or tpot needs streamed answers: drop {no_stream}"
            )
        if self.replay and (
            self.prompts_file is None or self.rates or self.find_capacity or self.concurrency
        ):
            raise BenchConfigError(
                "{replay} sends a {prompts_file} trace as recorded: give {prompts_file}, "
                "and no {concurrency}, {rates} or {find_capacity}"
            )
        if self.length_spread and self.prompts_file is not None:
            raise BenchConfigError("{length_spread} is for synthetic prompts, not {prompts_file}")
        if self.endpoint not in GENERATING:
            timed = self.slo is not None and self.slo.needs_stream
            for name, given in (("turns", self.turns > 1), ("ignore_eos", self.ignore_eos),
                                ("no_stream", not self.stream), ("slo", timed)):  # fmt: skip
                if given:
                    raise BenchConfigError(
                        f"{{{name}}} is for endpoints that generate: {{endpoint}} "
                        f"{self.endpoint} answers at once, with no tokens to time"
                    )
        if self.documents != DEFAULT_DOCUMENTS and self.endpoint != "rerank":
            raise BenchConfigError("{documents} is for {endpoint} rerank")
        if not self.levels and not self.open_loop:
            raise BenchConfigError(
                "nothing to run: give {concurrency}, {rates}, {replay} or {find_capacity}"
            )

    def _load_prompts(self, path: Path) -> list[Item]:
        """The file's prompts, every line checked now: no request of the run fails for what
        it says."""
        try:
            prompts = load_prompts_file(path)
        except ValueError as exc:  # it names the file, and the line or field
            raise BenchConfigError("{prompts_file}: {problem}", problem=str(exc)) from None
        except OSError as exc:
            raise BenchConfigError("{prompts_file}: {path}: {problem}", path=str(path),
                                   problem=str(exc.strerror or exc)) from None  # fmt: skip
        if self.replay and not all(isinstance(p, Prompt) and p.at is not None for p in prompts):
            raise BenchConfigError("{replay}: every line of {prompts_file} needs its 'timestamp'")
        return prompts
