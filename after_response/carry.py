"""The observability context a deferred call carries from the code that deferred it.

What ``asyncio.to_thread`` carries, and Sentry's and OpenTelemetry's thread integrations: the
deferring code's ``contextvars`` (Sentry's scopes, OpenTelemetry's current span, structlog's and
django-guid's request ids, any middleware's own), copied when the request first defers, minus
what belongs to the thread or event loop that set it:

- asgiref ``Local`` storage. Django keeps its database connections (a thread-local), cache
  clients, language, time zone, script prefix and urlconf there; asgiref >= 3.12 already hides a
  Local's data from another thread, but ``async_to_sync`` inside the call would re-home it there
  (asgiref.sync._restore_context), handing the call the request's cache clients. The four
  activations are set again by context.py, from the request.
- asgiref's executor bookkeeping (thread-sensitive context, deadlock detection): the request's
  executors are gone when the call runs, and would make ``async_to_sync`` in the call refuse
  ("would deadlock") or wait on them.
- this library's own: the request's queue (so the request object is not kept alive by its
  calls) and the running call.

Plus the capture/restore pairs registered with ``carry_context()`` for context kept elsewhere
(a ``threading.local``, say): ``capture()`` runs where the request first defers, ``restore(value)``
in the worker around each call.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import sentry

if TYPE_CHECKING:
    from django.http import HttpRequest

T = TypeVar("T")
_modules = sys.modules  # Sentry and OpenTelemetry are looked up here, never imported
logger = logging.getLogger("after_response")

Capture = Callable[[], Any]
Restore = Callable[[Any], "contextlib.AbstractContextManager[Any] | None"]

# Registered at import time or in AppConfig.ready(); read on every capture, hence a tuple.
_pairs: tuple[tuple[Capture, Restore], ...] = ()

# By name: asgiref creates these per Local and per class, and older versions named them alike.
_THREAD_BOUND = frozenset(
    {"asgiref.local", "thread_sensitive_context", "deadlock_context", "async_single_thread_context"}
)
_own: set[contextvars.ContextVar[Any]] = set()


def own(var: contextvars.ContextVar[T]) -> contextvars.ContextVar[T]:
    """Mark one of this library's context variables: never carried into a call."""
    _own.add(var)
    return var


def carry_context(capture: Capture, restore: Restore) -> None:
    """Carry context kept outside ``contextvars`` into deferred calls and drop-in threads.

    ``capture()`` runs where a request first defers (or a thread starts) and returns a value;
    ``restore(value)`` runs in the worker thread before each call and may return a context
    manager, exited after the call. Register once, at import time or in ``AppConfig.ready()``.
    """
    global _pairs
    for name, fn in (("capture", capture), ("restore", restore)):
        if not callable(fn):
            raise TypeError(
                f"carry_context() needs a callable {name}, got {type(fn).__name__!r}: "
                "carry_context(capture, restore), where restore(capture()) runs around each call."
            )
    _pairs = (*_pairs, (capture, restore))


class Carried:
    """A copy of the deferring code's context, and the values of the registered pairs.

    ``source`` is that copy (``contextvars.copy_context()``), or None to carry no context
    variable (``AFTER_RESPONSE_CARRY_CONTEXT = False``).
    """

    __slots__ = ("_base", "_sentry", "_source", "_values")

    def __init__(self, source: contextvars.Context | None, request: HttpRequest | None) -> None:
        self._source = source
        self._base: contextvars.Context | None = None if source is not None else _EMPTY
        # Checked here, on the request path, before any call: Sentry is rarely there.
        loaded = request is not None and "sentry_sdk" in _modules
        self._sentry = sentry.capture(request) if loaded else None
        pairs = _pairs
        self._values: tuple[tuple[Restore, Any], ...] = ()
        if pairs:
            values = []
            for capture, restore in pairs:
                try:
                    values.append((restore, capture()))
                except Exception:
                    logger.exception("after_response: carry_context capture %r failed", capture)
            self._values = tuple(values)

    def context(self) -> contextvars.Context:
        """A context of its own for one call: each may set variables, or run at the same time."""
        base = self._base
        if base is None:
            source = self._source
            if source is None:  # another worker made it meanwhile
                base = self._base
                assert base is not None
            else:
                base = contextvars.Context()
                base.run(_set_carried, source)
                self._base = base
                self._source = None  # the request's context, with its Locals, goes now
        return base.copy()

    @property
    def restores(self) -> bool:
        """Whether ``restoring()`` may have anything to do (cheap: checked for every call)."""
        return bool(self._values) or "sentry_sdk" in _modules

    def restoring(self) -> contextlib.AbstractContextManager[Any] | None:
        """Restore the registered pairs' values and Sentry's scopes; None if there are none."""
        values = self._values
        forking = "sentry_sdk" in _modules and sentry.active()
        if not values and not forking:
            return None
        stack = contextlib.ExitStack()
        if forking:
            stack.enter_context(sentry.scopes(self._sentry))
        for restore, value in values:
            try:
                entered = restore(value)
                if entered is not None:
                    stack.enter_context(entered)
            except Exception:
                # The call still runs (nothing accepted is lost), without that context.
                logger.exception("after_response: carry_context restore %r failed", restore)
        return stack


_EMPTY = contextvars.Context()


def _set_carried(
    source: contextvars.Context, own: set[Any] = _own, bound: Any = _THREAD_BOUND
) -> None:
    for var, value in source.items():
        if var not in own and var.name not in bound:
            var.set(value)
