"""What the command line needs of the bench layer beyond its public API: the bounds and
defaults its options share with `BenchConfig`, and its check of a list of percentiles."""

from ._config import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    DEFAULT_REQUESTS,
    MAX_CONCURRENCY,
    MAX_DOCUMENTS,
    MAX_OUTPUT_TOKENS,
    MAX_RATE,
    MAX_REPEAT,
    MAX_WORKERS,
    MIN_RATE,
)
from ._distribution_summary import percentiles_problem
from ._endpoints import DEFAULT_DOCUMENTS

__all__ = [
    "DEFAULT_DOCUMENTS",
    "MAX_DOCUMENTS",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_PROMPT_TOKENS",
    "DEFAULT_REQUESTS",
    "MAX_CONCURRENCY",
    "MAX_OUTPUT_TOKENS",
    "MAX_RATE",
    "MAX_REPEAT",
    "MAX_WORKERS",
    "MIN_RATE",
    "percentiles_problem",
]
