"""What deferred calls did, observed across threads and processes; waits are bounded, never bare
sleeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connection
from django.urls import get_script_prefix, get_urlconf
from django.utils import timezone, translation

T = TypeVar("T")

WAIT = 10.0  # seconds: generous bound for anything that should happen "soon"
POLL_INTERVAL = 0.01  # seconds between two looks at state that changes on its own time

_lock = threading.Condition()
calls: list[tuple[str, Any]] = []


def reset() -> None:
    with _lock:
        calls.clear()


def record(name: str, value: Any = None) -> None:
    with _lock:
        calls.append((name, value))
        _lock.notify_all()


def names() -> list[str]:
    with _lock:
        return [name for name, _ in calls]


def wait_for(count: int, timeout: float = WAIT) -> list[str]:
    """Wait until at least ``count`` calls were recorded; fail if they never come."""
    with _lock:
        if not _lock.wait_for(lambda: len(calls) >= count, timeout):
            raise AssertionError(f"expected {count} recorded calls, got {calls!r}")
        return [name for name, _ in calls]


def record_environment(name: str) -> None:
    record(
        name,
        {
            "language": translation.get_language(),
            "timezone": timezone.get_current_timezone_name(),
            "script_prefix": get_script_prefix(),
            "urlconf": get_urlconf(),
            "thread": threading.current_thread().name,
        },
    )


def fail(name: str) -> None:
    record(name)
    raise ValueError(f"{name} failed on purpose")


# -- state another thread or process updates on its own time ----------------------------------


def settled(read: Callable[[], T], done: Callable[[T], object], timeout: float = WAIT) -> T:
    """``read()`` until ``done(value)`` is true or ``timeout`` seconds have passed; the last value.

    For what changes after the event the test waited for, on another thread's or process's
    time: PostgreSQL's list of backends, a server's log, a file another process writes. The
    caller asserts on the value returned, so a value that never settles still fails the test,
    and the message shows it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(POLL_INTERVAL)


Backend = tuple[int, Any]  # (pid, backend_start): a pid may be reused by a later backend


def backends() -> set[Backend]:
    """PostgreSQL's sessions on the test database, other than this thread's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return set(cursor.fetchall())


def backends_left(baseline: set[Backend], timeout: float = WAIT) -> set[Backend]:
    """The sessions that started after ``baseline`` was taken and are still there once they
    have settled: none, unless a connection leaked.

    PostgreSQL ends a backend shortly after its client closed the connection (13-14 ms later,
    in CI under load): a count made at once still lists it. Sessions of the baseline that end
    meanwhile (an earlier test's, ending on their own time) are no concern of the caller.
    """
    return settled(lambda: backends() - baseline, lambda left: not left, timeout)


def child_answer(pid: int, read_end: int, timeout: float = WAIT) -> str:
    """What a forked child wrote to its pipe before it exited; a child that hangs is killed."""
    import os
    import select
    import signal

    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"the forked child {pid} did not answer within {timeout} s")
        with os.fdopen(read_end, closefd=False) as pipe:
            return pipe.read()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
