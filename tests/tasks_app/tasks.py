"""Task functions: what they did lands in ``tests.recorder`` (or, for ``record_visit``, a row)."""

from __future__ import annotations

import os
import threading
from typing import Any

from django.utils import translation

from tests import recorder

from .compat import task

# Set by tests that need a task to hold its worker; waits on them are bounded.
started = threading.Event()
release = threading.Event()


@task
def remember(name: str) -> str:
    recorder.record(name)
    return name


@task
def remember_environment(name: str) -> None:
    recorder.record_environment(name)


@task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    recorder.record("echo", (args, kwargs))
    return {"args": args, "kwargs": kwargs, 1: "one"}


@task
def fail(name: str) -> None:
    recorder.fail(name)


@task
def returns_something_odd() -> object:
    return object()


@task
def exits() -> None:
    raise SystemExit(3)


@task(takes_context=True)
def with_context(context: Any, name: str) -> dict[str, Any]:
    recorder.record(name, (context.task_result.id, context.attempt))
    # From the worker thread: results are the process's, not a thread's.
    own = with_context.get_result(context.task_result.id)
    return {"attempt": context.attempt, "status_seen": own.status}


@task
async def remember_async(name: str) -> str:
    recorder.record(name, translation.get_language())
    return name


@task(priority=10)
def urgent(name: str) -> str:
    recorder.record(name)
    return name


@task
def enqueue_another(name: str) -> None:
    remember.enqueue(name)


@task
def hold(name: str) -> None:
    started.set()
    recorder.record(name)
    if not release.wait(recorder.WAIT):
        raise TimeoutError("the test never released the held task")


@task
def record_visit(name: str) -> dict[str, Any]:
    """The end-to-end task: a row written, and a return value stored by the backend."""
    from .models import Visit  # only the end-to-end project installs this app

    Visit.objects.create(name=name, pid=os.getpid())
    return {"name": name, "pid": os.getpid()}
