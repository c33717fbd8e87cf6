"""The CLI's user errors by their old module name, for ``_bench.py`` alone: they live in
``_user_errors`` now. The bench command is being reworked on another branch, so its
import is switched there (or after it lands); then this module goes."""

from ._user_errors import (
    EXIT_INTERRUPTED,
    CliError,
    api_errors,
    disabled_reason,
    finite,
    print_error,
    print_interrupted,
    start_error,
)

__all__ = [
    "EXIT_INTERRUPTED",
    "CliError",
    "finite",
    "api_errors",
    "disabled_reason",
    "print_error",
    "print_interrupted",
    "start_error",
]
