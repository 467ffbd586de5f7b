"""The module-level functions of ``after_response``: defer(), drain(), stats()."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec

from . import runtime
from .deferred import DeferredCall
from .pool import Stats
from .queues import current_queue

P = ParamSpec("P")


def defer(fn: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs) -> DeferredCall:
    """Inside a request: run after its response is sent. Outside one: hand to the pool now.

    Either way a call deferred inside ``transaction.atomic()`` waits for the commit.
    """
    return current_queue().defer(fn, *args, **kwargs)


def drain(timeout: float | None = None, *, wait_for_responses: bool = False) -> bool:
    """Wait until every handed-off call has finished; False if ``timeout`` ran out first.

    For tests and management commands. Calls still waiting for a commit are not waited for
    (commit first). ``wait_for_responses=True`` also waits for requests whose response the
    server has not closed yet (live-server tests). A ``RuntimeError`` inside a deferred call.
    """
    return runtime.drain(timeout, wait_for_responses=wait_for_responses)


def stats() -> Stats:
    """Counters of this process's calls (see ``Stats``)."""
    return runtime.stats()
