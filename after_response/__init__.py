"""Run work after the response has been sent, in a managed pool of worker threads."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .carry import carry_context
    from .deferred import DeferredCall, State
    from .pool import Stats
    from .queues import Queue, current_queue
    from .runtime import shutdown
    from .shortcuts import defer, drain, stats

__all__ = [
    "DeferredCall",
    "Queue",
    "State",
    "Stats",
    "carry_context",
    "current_queue",
    "defer",
    "drain",
    "shutdown",
    "stats",
]

# Each public name and its module, imported on first use: importing after_response (pytest
# does, for its plugin, in every project where it is installed) imports no Django module.
_HOMES = {
    "DeferredCall": "deferred",
    "Queue": "queues",
    "State": "deferred",
    "Stats": "pool",
    "carry_context": "carry",
    "current_queue": "queues",
    "defer": "shortcuts",
    "drain": "shortcuts",
    "shutdown": "runtime",
    "stats": "shortcuts",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'after_response' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
