"""What deferred calls did, observed across threads; waits are bounded, never bare sleeps."""

from __future__ import annotations

import threading
from typing import Any

from django.urls import get_script_prefix, get_urlconf
from django.utils import timezone, translation

WAIT = 10.0  # seconds: generous bound for anything that should happen "soon"

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
