"""The queues users defer onto: one per request, and one for code outside any request."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from types import FunctionType
from typing import Any, ParamSpec

from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest

from . import carry, conf, context, runtime, transactions
from .context import CallContext
from .deferred import CallQueue, DeferredCall, State, later, open_queues, transition_lock
from .validation import validate

P = ParamSpec("P")
logger = logging.getLogger("after_response")

# The queue of the request being handled in this context; unset outside requests and in
# worker threads (each call runs in a fresh context).
current: contextvars.ContextVar[ResponseQueue] = carry.own(
    contextvars.ContextVar("after_response_queue")
)


class Queue(CallQueue):
    """A CallQueue that validates what is deferred and holds calls until their commit."""

    __slots__ = ()
    where = "after_response.defer()"  # for error messages

    def defer(self, fn: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs) -> DeferredCall:
        """Run ``fn(*args, **kwargs)`` once the response has been sent (and after commit)."""
        if args or kwargs or type(fn) is not FunctionType:
            validate(self.where, fn, args, kwargs)
        return self._enqueue(DeferredCall(fn, args, kwargs, self._context()), True, None)

    def add(
        self,
        fn: Callable[..., object],
        /,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        wait_for_commit: bool = True,
        only_on_success: bool | None = None,
    ) -> DeferredCall:
        """Like ``defer()``, with options that could collide with ``fn``'s own arguments.

        ``wait_for_commit=False`` runs the call even if the transaction it was deferred in
        rolls back (an error report, say). ``only_on_success=True`` runs it only if the
        response sent was a success (status below 400); ``False`` whatever the response;
        ``None`` as ``AFTER_RESPONSE_ONLY_ON_SUCCESS`` says. Outside a request it always runs.
        """
        if only_on_success is not None and not isinstance(only_on_success, bool):
            raise TypeError(
                f"{self.where}: only_on_success must be True, False or None (the setting), "
                f"got {type(only_on_success).__name__!r}."
            )
        args = tuple(args)
        if kwargs is None:
            kwargs = {}
        if args or kwargs or type(fn) is not FunctionType:
            validate(self.where, fn, args, kwargs)
        call = DeferredCall(fn, args, kwargs, self._context())
        return self._enqueue(call, wait_for_commit, only_on_success)

    def _enqueue(
        self, call: DeferredCall, wait_for_commit: bool, only_on_success: bool | None
    ) -> DeferredCall:
        if only_on_success or (only_on_success is None and self._only_on_success()):
            self._hold_for_success(call)
        if wait_for_commit:
            open_connections = transactions.open_transactions()
            if open_connections:
                self._wait_for_commit(call, open_connections)
        self.append(call)
        return call

    def _context(self) -> CallContext:
        return context.current("no request")

    def _only_on_success(self) -> bool:
        return False  # no response: the calls run as they are handed off

    def _hold_for_success(self, call: DeferredCall) -> None:
        pass

    def _wait_for_commit(self, call: DeferredCall, connections: list[BaseDatabaseWrapper]) -> None:
        transactions.wait_for_commit(call, connections)

    def hand_off(self, calls: list[DeferredCall]) -> None:
        runtime.hand_off(calls)


class ResponseQueue(Queue):
    """``request.on_response_sent``: the calls a request deferred, run after its response.

    One is made for every request, deferring or not: it stays small, and what it needs from
    the request is read at the first ``defer()``.
    """

    __slots__ = ("_call_context", "_gated", "_only_default", "_request", "_selective", "status")
    where = "request.defer()"

    def __init__(self, request: HttpRequest) -> None:
        self._calls = []
        # Until the response is closed, as Django's own request.close (see request_closed).
        self._request: HttpRequest | None = request
        self._call_context: CallContext | None = None
        self._gated: list[BaseDatabaseWrapper] | None = None
        # The status of the response as it left the middleware; None while there is none
        # (an exception, a client gone), so calls held for success are skipped then.
        self.status: int | None = None
        self._selective = False  # some call runs only on success
        self._only_default: bool | None = None  # AFTER_RESPONSE_ONLY_ON_SUCCESS, read once

    def __del__(self) -> None:
        # The last resort (middleware.py): a queue garbage-collected with calls in it was never
        # handed off. This may run anywhere, even where this thread holds transition_lock.
        calls = self._calls
        if calls:
            later(_rescue, calls)

    def request_closed(self) -> None:
        """``request.close`` (middleware.py): Django's ``close()``, then the hand-off.

        Django's handler puts ``request.close`` among the closers of the response it finally
        sends, so this runs when the server closes that response. The request is kept alive
        until then, as Django's bound method did, and let go of here: the reference cycle
        (request -> queue -> request) only outlives a response that is never closed, until the
        garbage collector finds it.
        """
        request, self._request = self._request, None
        try:
            if request is not None:
                type(request).close(request)  # closes its uploaded files
        finally:
            self.flush()

    def _context(self) -> CallContext:
        captured = self._call_context
        if captured is None:
            # None: a first defer() after the response was closed (e.g. by a thread the view
            # started): the context of the code deferring is what it has.
            captured = self._call_context = context.of_request(self._request)
        return captured

    def _only_on_success(self) -> bool:
        default = self._only_default
        if default is None:
            default = self._only_default = conf.get().ONLY_ON_SUCCESS
        return default

    def _hold_for_success(self, call: DeferredCall) -> None:
        call.only_on_success = True
        self._selective = True

    def _wait_for_commit(self, call: DeferredCall, connections: list[BaseDatabaseWrapper]) -> None:
        transactions.wait_for_commit(call, connections)
        if self._gated is None:
            self._gated = []
        self._gated.extend(connections)

    def hand_off(self, calls: list[DeferredCall]) -> None:
        if self._gated:
            transactions.settle_test_transactions(self._gated)
            self._gated = None
        if self._selective:
            status = self.status
            if status is None or status >= 400:
                _skip(calls, status)
        runtime.hand_off(calls)  # skipped calls too: the pool counts them


def _skip(calls: list[DeferredCall], status: int | None) -> None:
    skipped = []
    with transition_lock:
        for call in calls:
            if call.only_on_success and call.state is State.PENDING:
                call.state = State.SKIPPED
                skipped.append(call.name)
    if skipped:
        logger.debug(
            "Skipped %d deferred call(s) to run only on success: the response was %s: %s",
            len(skipped),
            status if status is not None else "never sent",
            ", ".join(skipped),
        )


def _rescue(calls: list[DeferredCall]) -> None:
    with transition_lock:
        open_queues[0] -= 1
    context = calls[0].context
    logger.error(
        "A request's %d deferred call(s) were found when its queue was garbage-collected: its "
        "response was never closed (request: %s). Running them now: %s",
        len(calls),
        getattr(context, "label", "unknown"),
        ", ".join(call.name for call in calls),
    )
    runtime.hand_off(calls)
    runtime.count_rescued()


class OutsideRequest(Queue):
    """Code outside any request (shell, command, a deferred call): calls go at once."""

    __slots__ = ()

    def __init__(self) -> None:
        self._calls = None  # always already "sent"


_outside = OutsideRequest()


def current_queue() -> Queue:
    """The current request's queue, or the one that hands calls off at once."""
    return current.get(_outside)
