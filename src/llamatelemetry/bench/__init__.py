"""A load generator for llama-server: what ``llamatelemetry bench`` runs.

The whole command is one call: `run_benchmark` runs what a `BenchConfig` says (the
config refuses settings that cannot run together with a `BenchConfigError`) and returns a
`BenchReport`, printing nothing. The pieces it is made of serve finer control:

```python
import asyncio
from llamatelemetry.bench import Workload, open_client, run_sweep, synthetic_prompts

async def main() -> None:
    async with open_client("http://127.0.0.1:8080", concurrency=4) as client:
        prompts = await synthetic_prompts(client, count=32, tokens=128)
        workload = Workload(prompts, max_tokens=128, stream=True)
        for run in await run_sweep(client, workload, [1, 2, 4]):
            print(run.concurrency, run.output_throughput, run.summary("ttft"))

asyncio.run(main())
```

Each `RunResult` holds every request's `RequestRecord`, client-measured (TTFT, ITL, TPOT,
end-to-end) and server-reported (llama.cpp's ``timings``) side by side; ``summary()`` gives
mean, median, p90 and p99 in milliseconds and ``to_dict()`` the JSON that ``--json`` prints.
`METRIC_DEFINITIONS` says what each figure is (our TPOT is guidellm's ITL; our ITL is
vLLM's). Synthetic prompts are as long as asked in the server's count, its chat
template's tokens included. With telemetry, the calibration and the warm-ups are left out
of the metrics, and every span carries `PHASE_ATTRIBUTE`.
"""

from ._benchmark import BenchProgress, run_benchmark
from ._compare import Change, compare_reports, load_baseline, usable_runs
from ._config import BenchConfig, BenchConfigError
from ._csv import write_csv
from ._distribution_summary import Summary, percentile, percentile_name
from ._endpoints import ENDPOINTS, GENERATING
from ._html import write_html
from ._load import Workload, open_client, run_load, run_sweep
from ._phase import PHASE_ATTRIBUTE, phase
from ._plot import plot_results
from ._prompts import (
    FilePrompts,
    Item,
    Messages,
    Prompt,
    PromptSource,
    SyntheticPrompts,
    load_prompts_file,
    messages_of,
    repeat_prompts,
    synthetic_prompts,
    synthetic_source,
    template_prefix_tokens,
    template_tokens,
    tokens_per_word,
    with_lengths_made,
)
from ._records import (
    ITL_NOTE,
    METRIC_DEFINITIONS,
    METRIC_TITLES,
    METRICS,
    TPOT_NOTE,
    RequestRecord,
    RunResult,
    TurnSummary,
)
from ._report import BenchReport
from ._schedule import DURATION_GRACE, Arrivals, arrival_times, burstiness_problem
from ._slo import SLO, Attainment, capacity_bounded, find_capacity
from ._watch import ServerSample, ServerWatch

__all__ = [
    "ENDPOINTS",
    "GENERATING",
    "BenchConfig",
    "BenchConfigError",
    "BenchProgress",
    "BenchReport",
    "run_benchmark",
    "SLO",
    "Change",
    "compare_reports",
    "load_baseline",
    "usable_runs",
    "write_csv",
    "write_html",
    "Arrivals",
    "DURATION_GRACE",
    "Attainment",
    "FilePrompts",
    "Item",
    "Prompt",
    "PromptSource",
    "messages_of",
    "ServerSample",
    "ServerWatch",
    "SyntheticPrompts",
    "arrival_times",
    "burstiness_problem",
    "capacity_bounded",
    "find_capacity",
    "synthetic_source",
    "template_prefix_tokens",
    "template_tokens",
    "METRICS",
    "ITL_NOTE",
    "METRIC_DEFINITIONS",
    "METRIC_TITLES",
    "PHASE_ATTRIBUTE",
    "Messages",
    "RequestRecord",
    "RunResult",
    "Summary",
    "TPOT_NOTE",
    "TurnSummary",
    "Workload",
    "load_prompts_file",
    "open_client",
    "percentile",
    "percentile_name",
    "phase",
    "plot_results",
    "repeat_prompts",
    "run_load",
    "run_sweep",
    "synthetic_prompts",
    "tokens_per_word",
    "with_lengths_made",
]
