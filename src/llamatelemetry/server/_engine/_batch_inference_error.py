"""`BatchInferenceError`: what `InferenceEngine.batch_infer` raises when some of its
prompts failed (the error tree is drawn in ``server/_server_errors``)."""

from __future__ import annotations

from ...api import LlamaTelemetryError
from ._inference_result import InferenceResult

__all__ = ["BatchInferenceError"]


class BatchInferenceError(LlamaTelemetryError):
    """Some prompts of a `InferenceEngine.batch_infer` call failed; the others did not.

    ``results[i]`` is the `InferenceResult` of prompt ``i``, or the exception it raised;
    ``errors`` maps the index of each failed prompt to its exception; `successes` maps
    the others to their results. The first failure is also the ``__cause__``.
    """

    def __init__(self, results: list[InferenceResult | Exception]) -> None:
        self.results = results
        self.errors: dict[int, Exception] = {
            i: r for i, r in enumerate(results) if isinstance(r, Exception)
        }
        shown = "; ".join(
            f"[{i}] {type(e).__name__}: {e}" for i, e in list(self.errors.items())[:5]
        )
        more = f"; and {len(self.errors) - 5} more" if len(self.errors) > 5 else ""
        super().__init__(f"{len(self.errors)} of {len(results)} prompts failed: {shown}{more}")

    @property
    def successes(self) -> dict[int, InferenceResult]:
        return {i: r for i, r in enumerate(self.results) if isinstance(r, InferenceResult)}
