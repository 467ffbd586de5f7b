"""One deferred call, and the per-request queue that holds calls until the response is sent.

Nothing here imports Django: the queue is handed a ``hand_off`` callable that decides where
its calls go (the worker pool, an inline runner in tests, a capture list).
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger("after_response")


class State(enum.Enum):
    PENDING = "pending"  # in a request's queue, response not sent yet
    WAITING = "waiting"  # handed off, but its transaction has not committed yet
    QUEUED = "queued"  # in the worker pool's backlog
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DISCARDED = "discarded"  # its transaction rolled back
    DROPPED = "dropped"  # refused: backlog full, or shutting down
    SKIPPED = "skipped"  # only_on_success, and the response was not a success


# Every State transition of every DeferredCall, every CallQueue hand-off and the pool's counters
# are guarded by this one lock, so that cancel() and a worker starting the call cannot both win
# and the counters always add up. It is held for a few attribute writes, never across user code.
transition_lock = threading.Lock()
# Request queues holding calls not handed off yet (responses not closed yet). Guarded by
# transition_lock.
open_queues = [0]
# A fork while another thread holds the lock would leave it held forever in the child.
# uWSGI's --py-call-osafterfork runs the child hook without the before hook: release only if held.
os.register_at_fork(
    before=transition_lock.acquire,
    after_in_parent=transition_lock.release,
    after_in_child=lambda: transition_lock.release() if transition_lock.locked() else None,
)


# Code that runs at an arbitrary point (a garbage collector finalizer, ``__del__``) may run in a
# thread that already holds transition_lock: it must never take it. It posts its work here
# instead (SimpleQueue.put is reentrant) and ``run_later()`` does it at the next safe point: a
# hand-off, stats(), drain(), shutdown(), a worker between calls, the slow-call monitor.
_later: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.SimpleQueue()


def later(fn: Callable[..., None], *args: Any) -> None:
    """Do ``fn(*args)`` at the next safe point; safe to call from anywhere, even a finalizer."""
    _later.put((fn, args))


def run_later() -> None:
    """Do the work posted with ``later()``. Call with no lock held."""
    while not _later.empty():
        try:
            fn, args = _later.get_nowait()
        except queue.Empty:
            return
        try:
            fn(*args)
        except Exception:
            logger.exception("after_response: postponed work %r failed", fn)


class DeferredCall:
    """A callable with its arguments, to run once the response has been sent."""

    __slots__ = (
        "args",
        "context",
        "fn",
        "gates",
        "kwargs",
        "on_settled",
        "only_on_success",
        "queued_at",
        "state",
    )

    def __init__(
        self,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: Any = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        # Opaque to this module: what the runner needs to recreate the request's context.
        self.context = context
        # Number of transactions that must commit before the call may run (see transactions.py).
        self.gates = 0
        self.state = State.PENDING
        # Set when the call waits for a commit after its queue was handed off: called with the
        # call once its transactions settle (committed, or rolled back).
        self.on_settled: Callable[[DeferredCall], None] | None = None
        # time.monotonic() at the hand-off, when tracing is on (tracing.py); else 0.0.
        self.queued_at = 0.0
        # Run only if its request's response was a success (status < 400); see queues.py.
        self.only_on_success = False

    @property
    def name(self) -> str:
        return callable_name(self.fn)

    def cancel(self) -> bool:
        """Cancel the call if it has not started; return whether it was cancelled."""
        with transition_lock:
            if self.state in (State.PENDING, State.WAITING, State.QUEUED):
                self.state = State.CANCELLED
                return True
            return False

    def cancelled(self) -> bool:
        return self.state is State.CANCELLED

    def __repr__(self) -> str:
        return f"<DeferredCall {self.name} {self.state.value}>"


def callable_name(fn: Any) -> str:
    """A name for logs: module and qualified name, never argument values."""
    func = getattr(fn, "func", None)  # functools.partial, django.tasks.Task
    if func is not None and not hasattr(fn, "__qualname__"):
        fn = func
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{qualname}"


def is_task(fn: object) -> bool:
    """A django.tasks (or django_tasks backport) Task: not callable, enqueued instead."""
    # The backport's package does not export Task: look in the modules that define it.
    for module_name in ("django.tasks.base", "django_tasks.base"):
        module = sys.modules.get(module_name)  # a Task instance means its module is loaded
        task_class = getattr(module, "Task", None)
        if task_class is not None and isinstance(fn, task_class):
            return True
    return False


class CallQueue:
    """The calls one request deferred, in order; handed off once, when the response is sent.

    A call added after the hand-off (a sync view still running after an ASGI client
    disconnect) is handed off on its own at once, so nothing is ever stranded here.
    Subclasses say where calls go by overriding ``hand_off``.
    """

    __slots__ = ("__weakref__", "_calls")

    def __init__(self) -> None:
        # None once handed off. Guarded by transition_lock.
        self._calls: list[DeferredCall] | None = []

    def hand_off(self, calls: list[DeferredCall]) -> None:
        raise NotImplementedError

    def append(self, call: DeferredCall) -> None:
        with transition_lock:
            calls = self._calls
            if calls is not None:
                if not calls:
                    open_queues[0] += 1
                calls.append(call)
                return
        self.hand_off([call])

    def flush(self) -> None:
        """Hand the calls off. Idempotent: only the first call does anything."""
        with transition_lock:
            calls, self._calls = self._calls, None
            if calls:
                open_queues[0] -= 1
        if calls:
            self.hand_off(calls)

    @property
    def sent(self) -> bool:
        """Whether the queue has been handed off (the response was sent)."""
        return self._calls is None

    def __len__(self) -> int:
        return len(self._live())

    def __iter__(self) -> Iterator[DeferredCall]:
        return iter(self._live())

    def __bool__(self) -> bool:
        return bool(self._live())

    def _live(self) -> list[DeferredCall]:
        calls = self._calls
        return [] if calls is None else [c for c in calls if c.state is State.PENDING]

    def cancel(self, call: DeferredCall) -> bool:
        """Cancel one call of this queue if it has not started; return whether it was."""
        return call.cancel()
