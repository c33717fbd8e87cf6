"""Where captured message content goes: the GenAI utilities' modes, read as they read them.

``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` takes ``NO_CONTENT`` (the default),
``SPAN_ONLY``, ``EVENT_ONLY`` or ``SPAN_AND_EVENT``; the older boolean form
(``true``/``1``/``yes``/``on``) means ``SPAN_ONLY``, as it always did here.
``OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT`` (``true``/``false``) decides whether the
``gen_ai.client.inference.operation.details`` event is emitted; unset, it follows the mode
(emitted for ``EVENT_ONLY`` and ``SPAN_AND_EVENT``).
"""

from __future__ import annotations

import enum
import logging
import os

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "EMIT_EVENT_ENV",
    "ContentCapture",
    "capture_mode",
    "emit_event",
]

log = logging.getLogger("llamatelemetry.telemetry")

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
EMIT_EVENT_ENV = "OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class ContentCapture(enum.Enum):
    """Where message content is recorded (never by default: it may hold personal data)."""

    NO_CONTENT = "NO_CONTENT"
    SPAN_ONLY = "SPAN_ONLY"
    EVENT_ONLY = "EVENT_ONLY"
    SPAN_AND_EVENT = "SPAN_AND_EVENT"

    @property
    def on_span(self) -> bool:
        return self in (ContentCapture.SPAN_ONLY, ContentCapture.SPAN_AND_EVENT)

    @property
    def on_event(self) -> bool:
        return self in (ContentCapture.EVENT_ONLY, ContentCapture.SPAN_AND_EVENT)


def _parse(value: str, source: str) -> ContentCapture:
    text = value.strip()
    try:
        return ContentCapture[text.upper()]
    except KeyError:
        pass
    if text.lower() in _TRUE:
        return ContentCapture.SPAN_ONLY
    if text.lower() not in _FALSE:
        log.warning(
            "%s=%r is not one of NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT (or "
            "true/false): no content is captured",
            source,
            value,
        )
    return ContentCapture.NO_CONTENT


def capture_mode(value: bool | str | ContentCapture | None = None) -> ContentCapture:
    """The mode from an argument (``True`` is ``SPAN_ONLY``, a string is parsed as the
    environment variable is), or from the environment when it is None."""
    if value is None:
        return _parse(os.environ.get(CAPTURE_CONTENT_ENV, ""), CAPTURE_CONTENT_ENV)
    if isinstance(value, ContentCapture):
        return value
    if isinstance(value, bool):
        return ContentCapture.SPAN_ONLY if value else ContentCapture.NO_CONTENT
    if isinstance(value, str):
        return _parse(value, "capture_content")
    raise TypeError(
        "capture_content must be True, False, None (the environment decides) or one of "
        f"'NO_CONTENT', 'SPAN_ONLY', 'EVENT_ONLY', 'SPAN_AND_EVENT', not {type(value).__name__}"
    )


def emit_event(mode: ContentCapture) -> bool:
    """Whether to emit the operation-details event: the environment's say, else the mode's."""
    value = os.environ.get(EMIT_EVENT_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return mode.on_event
