"""Django Tasks (``django.tasks``, or the ``django_tasks`` backport for Django 5.2).

``AfterResponseBackend`` runs tasks in this process's worker pool. Enqueued in a request, a task
joins the request's ``on_response_sent`` queue: it runs after the response is sent, in order with
the calls the request deferred, after the commit of the transaction it was enqueued in (discarded
on rollback), with the request's language, time zone, script prefix and urlconf. Enqueued anywhere
else (a command, the shell, another task) it goes to the pool at once, after commit.

Where it differs from a distributed backend, by design:

* results live in the process that enqueued the task (``get_result`` from another server worker
  process cannot find them), for the last ``OPTIONS["max_results"]`` tasks;
* ``priority`` is accepted and recorded but reorders nothing: a request's tasks run in the order
  it enqueued them, requests in the order their responses were sent;
* ``run_after`` is refused (``supports_defer = False``): a task held in memory for later would be
  lost at the next restart, and that is exactly what a delay makes likely;
* a task the pool dropped (backlog full, shutting down) or that was cancelled reads ``FAILED``
  with a ``TaskNotRun`` error; one whose transaction rolled back no longer exists, like a
  database backend's row.

``request.defer(some_task, ...)`` (see ``deferred.is_task``) enqueues a Task of any backend once
the response is sent (after commit), so a distributed backend's write happens off the request
path. The core never imports this module: only a ``TASKS`` setting naming the backend does.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from importlib.util import find_spec
from traceback import format_exception
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.crypto import get_random_string

from . import queues
from .deferred import DeferredCall, State

if TYPE_CHECKING or find_spec("django.tasks"):  # Django >= 6.0 (and what mypy checks)
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
else:
    try:  # Django 5.2: the django-tasks backport, the same API
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
        from django_tasks.exceptions import TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
        from django_tasks.utils import normalize_json
    except ImportError:  # no Tasks framework: only is_task() and enqueue() are of use

        class BaseTaskBackend:  # type: ignore[no-redef]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise ImproperlyConfigured(
                    "AfterResponseBackend needs a Django Tasks framework: Django >= 6.0, or on "
                    'Django 5.2 the backport (pip install "after_response[tasks]") with '
                    '"django_tasks" in INSTALLED_APPS.'
                )


P = ParamSpec("P")
R = TypeVar("R")

MAX_RESULTS = 1000  # results kept per backend alias and process, by default
OPTIONS = ("max_results",)


class TaskNotRun(Exception):
    """The pool never ran the task: it was dropped or cancelled (the TaskError says which)."""


class AfterResponseBackend(BaseTaskBackend):
    """Runs tasks in this process's worker pool; in a request, after its response is sent.

    ``OPTIONS``: ``{"max_results": 1000}``, how many results (the most recently enqueued) this
    process keeps for ``get_result``; 0 keeps none.
    """

    supports_defer = False
    """No ``run_after``: a task held in memory for later would be lost at the next restart."""

    supports_async_task = True
    """Coroutine functions run on a worker thread, through ``async_to_sync``."""

    supports_get_result = True
    """From any thread of the process that enqueued the task, for the last ``max_results``."""

    supports_priority = True
    """Accepted and recorded, as by Django's ImmediateBackend, but the pool runs in order."""

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = sorted(set(self.options) - set(OPTIONS))
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {unknown}: "
                f"AfterResponseBackend knows {list(OPTIONS)}."
            )
        max_results = self.options.get("max_results", MAX_RESULTS)
        if not isinstance(max_results, int) or isinstance(max_results, bool) or max_results < 0:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']['max_results'] must be an int >= 0 (results "
                f"kept per process), got {max_results!r}."
            )
        self.supports_get_result = max_results > 0
        with _lock:
            # Django makes a backend instance per thread: the results are the process's.
            self._results = _results.setdefault(alias, _Results())
            self._results.resize(max_results)

    def enqueue(
        self, task: Task[P, R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        self.validate_task(task)
        entry, enqueued = self._prepare(task, args, kwargs)
        task_enqueued.send(type(self), task_result=enqueued)
        self._submit(entry)
        return enqueued

    async def aenqueue(
        self, task: Task[P, R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        # No thread hop: enqueueing only appends to a queue, it never waits.
        self.validate_task(task)
        entry, enqueued = self._prepare(task, args, kwargs)
        await task_enqueued.asend(type(self), task_result=enqueued)
        self._submit(entry)
        return enqueued

    def _prepare(
        self, task: Task[P, R], args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[_Entry, TaskResult[P, R]]:
        result: TaskResult[P, R] = TaskResult(
            task=task,
            id=get_random_string(32),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=json_round_trip(args, "Task arguments"),
            kwargs=json_round_trip(kwargs, "Task arguments"),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        entry = _Entry(result)
        with _lock:
            self._results.add(entry)
            return entry, _snapshot(result)

    def _submit(self, entry: _Entry) -> None:
        # The request's queue, or the one that hands calls to the pool at once; either way the
        # call waits for the commit of the transaction it was enqueued in.
        entry.call = queues.current_queue().add(_Run(type(self), entry.result))

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        with _lock:
            entry = self._results.get(result_id)
            if entry is None:
                raise TaskResultDoesNotExist(result_id)
            return _snapshot(entry.result)


# -- results -----------------------------------------------------------------------------


class _Entry:
    """A task's result as this process knows it, and the deferred call that runs it."""

    __slots__ = ("call", "result")

    def __init__(self, result: TaskResult[..., Any]) -> None:
        self.result = result
        self.call: DeferredCall | None = None  # set once the call is queued


class _Results:
    """The results of one backend alias in this process: the most recently enqueued ones."""

    __slots__ = ("entries", "max_results")

    def __init__(self) -> None:
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.max_results = MAX_RESULTS

    # Every method is called with _lock held.

    def resize(self, max_results: int) -> None:
        self.max_results = max_results
        self._trim()

    def add(self, entry: _Entry) -> None:
        self.entries[entry.result.id] = entry
        self._trim()

    def get(self, result_id: str) -> _Entry | None:
        entry = self.entries.get(result_id)
        if entry is None or not _settle_unrun(entry):
            self.entries.pop(result_id, None)
            return None
        return entry

    def _trim(self) -> None:
        while len(self.entries) > self.max_results:
            self.entries.popitem(last=False)  # the oldest; a task still to run runs anyway


_UNRUN = {
    State.DROPPED: "it was dropped by after_response's pool (backlog full, or shutting down; "
    "see the after_response log)",
    State.CANCELLED: "its deferred call was cancelled before it started",
    State.FAILED: "its deferred call failed before the task started (see the after_response log)",
}


def _settle_unrun(entry: _Entry) -> bool:
    """Give a task its pool never ran a final status; False if it no longer exists.

    Called with _lock held. The pool tells nobody when it drops, cancels or discards a call, so
    this looks when the result is read.
    """
    call, result = entry.call, entry.result
    if call is None or result.status != TaskResultStatus.READY:
        return True
    if call.state is State.DISCARDED:
        return False  # enqueued in a transaction that rolled back, like a row never committed
    reason = _UNRUN.get(call.state)
    if reason is not None:
        error = TaskNotRun(f"The task never ran: {reason}.")
        _update(result, status=TaskResultStatus.FAILED, finished_at=timezone.now())
        result.errors.append(_task_error(error))
    return True


def _snapshot(result: TaskResult[P, R]) -> TaskResult[P, R]:
    """What callers get: a copy, as from a distributed backend, so ``refresh()`` updates it.

    Called with _lock held, so a worker thread never changes the result halfway through.
    """
    snapshot = copy.copy(result)
    _update(
        snapshot,
        args=copy.deepcopy(result.args),
        kwargs=copy.deepcopy(result.kwargs),
        errors=list(result.errors),
        worker_ids=list(result.worker_ids),
        _return_value=copy.deepcopy(getattr(result, "_return_value", None)),
    )
    return snapshot


def _update(result: TaskResult[..., Any], **changes: Any) -> None:
    for name, value in changes.items():
        object.__setattr__(result, name, value)  # TaskResult is a frozen dataclass


def _task_error(exc: BaseException) -> TaskError:
    exception_type = type(exc)
    return TaskError(
        exception_class_path=f"{exception_type.__module__}.{exception_type.__qualname__}",
        traceback="".join(format_exception(exc)),
    )


def json_round_trip(value: Any, what: str) -> Any:
    """``value`` as a distributed backend's worker sees it: through JSON (tuples become
    lists, dict keys strings). Raises ``TypeError`` saying the fix if it is not JSON data."""
    try:
        return json.loads(json.dumps(normalize_json(value)))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} must be JSON data, as on every Tasks backend ({exc}): pass plain values "
            "and primary keys (order.pk, not order; a datetime's isoformat())."
        ) from exc


# Guards every _Results and every change to a stored TaskResult; held for a few attribute
# writes and copies, never across user code.
_lock = threading.Lock()
_results: dict[str, _Results] = {}  # by backend alias; guarded by _lock


def _after_fork_in_child() -> None:
    if _lock.locked():  # uWSGI's --py-call-osafterfork runs no before hook
        _lock.release()
    # The parent's tasks are the parent's: the child's pool never runs them.
    for results in _results.values():
        results.entries.clear()


os.register_at_fork(
    before=_lock.acquire,
    after_in_parent=_lock.release,
    after_in_child=_after_fork_in_child,
)


# -- running -----------------------------------------------------------------------------


class _Run:
    """The deferred call that runs one task, on a worker thread (or inline in tests)."""

    __slots__ = ("result", "sender")

    def __init__(self, sender: type[AfterResponseBackend], result: TaskResult[..., Any]) -> None:
        self.sender = sender
        self.result = result

    @property
    def func(self) -> Callable[..., Any]:
        """The task's function: logs, signals and ``DeferredCall.name`` are named after it."""
        return self.result.task.func

    def __call__(self) -> None:
        _run_task(self.sender, self.result)


def _run_task(sender: type[AfterResponseBackend], result: TaskResult[..., Any]) -> None:
    """READY -> RUNNING -> SUCCESSFUL or FAILED, with Django's task signals, like its workers.

    A task that raises is not re-raised: it is a FAILED result with a TaskError, logged once
    (with its traceback, by Django's own ``task_finished`` receiver), and the deferred call
    that ran it counts as done.
    """
    task = result.task
    with _lock:
        started = timezone.now()
        _update(result, status=TaskResultStatus.RUNNING, started_at=started)
        _update(result, last_attempted_at=started)
        result.worker_ids.append(f"{os.getpid()}:{threading.current_thread().name}")
        running = _snapshot(result)
    try:
        # Inside the try, like django-tasks-db's worker: a receiver that raises fails the task.
        task_started.send(sender, task_result=running)
        if task.takes_context:
            value = task.call(TaskContext(task_result=running), *running.args, **running.kwargs)
        else:
            value = task.call(*running.args, **running.kwargs)
        value = json_round_trip(value, "A task's return value")
    except BaseException as exc:
        with _lock:
            _update(result, status=TaskResultStatus.FAILED, finished_at=timezone.now())
            result.errors.append(_task_error(exc))
            finished = _snapshot(result)
        # Sent inside the except block: Django's receiver logs the traceback from exc_info.
        task_finished.send(sender, task_result=finished)
        if not isinstance(exc, Exception):
            raise  # SystemExit and the like: the pool logs it and keeps the worker
        return
    with _lock:
        _update(result, status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now())
        _update(result, _return_value=value)
        finished = _snapshot(result)
    task_finished.send(sender, task_result=finished)
