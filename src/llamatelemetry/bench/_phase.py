"""Which part of a benchmark a request belongs to: the prompts' calibration, a warm-up,
or the measurement itself.

A run sends requests that measure nothing: ``/tokenize`` and ``/apply-template`` to
calibrate the synthetic prompts, and warm-ups before every level. With telemetry on,
their spans carry ``llamatelemetry.bench.phase`` ("calibration", "warmup"), the measured
requests' "measured", so that a trace viewer tells them apart; and they are sent inside
telemetry's ``unmeasured()``, which records no metric points for them, so the GenAI
histograms count the measured requests only.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry.trace import TracerProvider

__all__ = ["CALIBRATION", "MEASURED", "PHASE_ATTRIBUTE", "WARMUP", "mark_phases", "phase"]

PHASE_ATTRIBUTE = "llamatelemetry.bench.phase"
CALIBRATION = "calibration"
WARMUP = "warmup"
MEASURED = "measured"

_current: ContextVar[str | None] = ContextVar(PHASE_ATTRIBUTE, default=None)
_marked: weakref.WeakSet[Any] = weakref.WeakSet()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Requests sent in this block (and in the tasks it starts) belong to phase ``name``;
    outside the measured phase they add no point to the GenAI metrics."""
    token = _current.set(name)
    try:
        if name == MEASURED:
            yield
        else:
            with _unmeasured():
                yield
    finally:
        _current.reset(token)


@contextmanager
def _unmeasured() -> Iterator[None]:
    try:  # telemetry's, where the otel extra is installed; else nothing records metrics
        from ..telemetry import unmeasured
    except ImportError:
        yield
        return
    with unmeasured():
        yield


def current_phase() -> str | None:
    return _current.get()


def mark_phases(provider: TracerProvider) -> None:
    """Have every span that ``provider`` starts during a phase carry `PHASE_ATTRIBUTE`.
    Only the OpenTelemetry SDK's providers take span processors: others are left alone.

    This adds a span processor to the provider for good (the SDK cannot remove one), once
    per provider: `open_client` does it for the ``tracer_provider`` it is given, which may
    be the program's own. That is harmless outside a phase: the processor only reads the
    current phase, and a span started outside one is left as it is."""
    if provider in _marked or not hasattr(provider, "add_span_processor"):
        return
    try:
        from opentelemetry.sdk.trace import SpanProcessor
    except ImportError:  # another SDK's provider: its spans go unmarked
        return

    class _PhaseMarker(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            name = _current.get()
            if name is not None:
                span.set_attribute(PHASE_ATTRIBUTE, name)

    provider.add_span_processor(_PhaseMarker())
    _marked.add(provider)
