"""What a llama-server's ``/slots`` says about its context (the KV cache), and when it
can be asked without keeping a model awake.

llama.cpp answers ``/slots`` through its task queue: on a server with
``--sleep-idle-seconds`` the request wakes a sleeping model (a reload) and, awake, restarts
its idle timer, so a scraper that asks at every scrape keeps the model in memory for good.
``/metrics`` and ``/props`` do neither. So ``/slots`` is asked only when the server may
have changed since it was last asked (a request in flight, or any of the counters in
``/metrics`` moved) and ``/props`` says it is awake; otherwise the last answer stands, or,
asleep, the same slots holding nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._attributes import count

__all__ = ["SlotUse", "Slots", "busy", "fingerprint"]

# The samples whose values change whenever a slot's cache may have: a request processed,
# a prompt read (from the cache or not), a token decoded, a request waiting.
_MOVING = (
    "llamacpp:prompt_tokens_total",
    "llamacpp:prompt_tokens_cached_total",
    "llamacpp:tokens_predicted_total",
    "llamacpp:n_decode_total",
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
)
_WORKING = ("llamacpp:requests_processing", "llamacpp:requests_deferred")


def fingerprint(values: Mapping[str, float]) -> tuple[float | None, ...] | None:
    """What ``/metrics`` says that moves with the slots; None when it says none of it
    (``/metrics`` off or unreadable: then the slots may have changed at any time)."""
    found = tuple(values.get(name) for name in _MOVING)
    return None if all(value is None for value in found) else found


def busy(values: Mapping[str, float]) -> bool:
    """Whether ``/metrics`` says a request is being processed or waits for a slot: the
    server is awake, and its slots are changing."""
    return any((values.get(name) or 0) > 0 for name in _WORKING)


@dataclass(frozen=True, slots=True)
class SlotUse:
    """One slot's context: ``tokens`` of its ``size`` (``n_ctx``) held in its cache."""

    id: int
    size: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Slots:
    """One server's (or one of a router's models') slots, as last read."""

    busy: int
    total: int
    use: tuple[SlotUse, ...] = ()

    @classmethod
    def of(cls, listed: list[dict[str, Any]]) -> Slots:
        """From ``/slots`` (normalized: each with a ``state``). A slot without a readable
        ``id``, ``n_ctx`` or ``n_prompt_tokens`` (the tokens in its cache, the generated
        ones included) counts as a slot, with no context figures."""
        use = []
        for slot in listed:
            ident, size = count(slot.get("id")), count(slot.get("n_ctx"))
            if ident is None or size is None:
                continue
            tokens = count(slot.get("n_prompt_tokens", 0))  # none yet: an unused slot
            if tokens is not None:
                use.append(SlotUse(ident, size, tokens))
        working = sum(1 for slot in listed if slot.get("state") == "processing")
        return cls(working, len(listed), tuple(use))

    @classmethod
    def of_props(cls, props: Mapping[str, Any]) -> Slots | None:
        """The slots of a server asleep that was never read awake: ``/props`` says how
        many there are and each one's context size; none holds anything."""
        total = count(props.get("total_slots"))
        settings = props.get("default_generation_settings")
        size = count(settings.get("n_ctx")) if isinstance(settings, Mapping) else None
        if total is None:
            return None
        use = () if size is None else tuple(SlotUse(i, size, 0) for i in range(total))
        return cls(0, total, use)

    def asleep(self) -> Slots:
        """These slots once the model is freed: none working, none holding anything."""
        return Slots(0, self.total, tuple(SlotUse(u.id, u.size, 0) for u in self.use))

    @property
    def context_tokens(self) -> int | None:
        return sum(u.tokens for u in self.use) if self.use else None

    @property
    def context_size(self) -> int | None:
        return sum(u.size for u in self.use) if self.use else None
