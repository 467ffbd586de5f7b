"""Helpers for testing code that defers work. The pytest plugin's fixtures use them too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.http import HttpRequest
from django.test import AsyncRequestFactory as DjangoAsyncRequestFactory
from django.test import RequestFactory as DjangoRequestFactory

from . import runtime
from .deferred import DeferredCall
from .pool import WorkerPool
from .queues import Queue


class DeferredCallFailed(AssertionError):
    """A call deferred during a test raised; its exception is the ``__cause__``."""


class _CapturePool(WorkerPool):
    """Takes hand-offs like the real pool, but only records the ready calls."""

    def __init__(self) -> None:
        super().__init__(
            workers=1,
            max_pending=1,
            when_full="drop",
            block_timeout=0,
            run_call=runtime.run_inline,
        )
        self.captured: list[DeferredCall] = []

    def _refusal(self, size: int) -> str | None:
        return None

    def _deliver(self, batch: list[DeferredCall]) -> None:
        self.captured.extend(batch)


@contextmanager
def capture_deferred(*, execute: bool = False) -> Iterator[list[DeferredCall]]:
    """Collect the calls handed off inside the block instead of running them.

    Like ``TestCase.captureOnCommitCallbacks``: with ``execute=True`` the captured calls run
    inline when the block exits (calls they defer in turn too), and the first one that raised
    makes the block raise ``DeferredCallFailed``.
    """
    capture = _CapturePool()
    runtime.captures.append(capture)
    try:
        yield capture.captured
    finally:
        runtime.captures.remove(capture)
    if execute:
        run_captured(capture.captured, capture)


def run_captured(calls: list[DeferredCall], capture: _CapturePool | None = None) -> None:
    errors: list[tuple[DeferredCall, BaseException]] = []
    index = 0
    while index < len(calls):
        call = calls[index]
        index += 1
        if call.cancelled():
            continue
        if capture is not None:
            runtime.captures.append(capture)  # follow-up calls are captured, then run here
        try:
            error = runtime.run_captured_call(call)
        finally:
            if capture is not None:
                runtime.captures.remove(capture)
        if error is not None:
            errors.append((call, error))
    if errors:
        call, error = errors[0]
        raise DeferredCallFailed(f"deferred call {call.name} raised {error!r}") from error


def raise_inline_failures() -> None:
    """Raise if a call run inline (``AFTER_RESPONSE_IMMEDIATE``) raised since the last check."""
    failures = runtime.inline_failures[:]
    runtime.inline_failures.clear()
    if failures:
        call, error = failures[0]
        raise DeferredCallFailed(
            f"deferred call {call.name} raised {error!r} ({len(failures)} failure(s) in all)"
        ) from error


R = TypeVar("R")


def deferring(request: R) -> R:
    """Give a request made without the middleware ``defer`` and ``on_response_sent``.

    For requests a view is called with directly: pytest-django's ``rf``, Django REST framework's
    ``APIRequestFactory`` (or its ``Request``), your own. No response will be sent, so its queue
    behaves like one outside a request: calls are handed off as they are deferred (and captured
    by ``capture_deferred()``). Returns the request.
    """
    # DRF's Request reads missing attributes from the HttpRequest it wraps: set them there.
    target = getattr(request, "_request", request)
    for name, value in deferring_attributes().items():
        setattr(target, name, value)
    return request


def deferring_attributes() -> dict[str, Any]:
    """``deferring()`` as attributes, for test clients that build the request themselves and
    set keyword arguments on it: ``ninja.testing.TestClient(router).post(path,
    **deferring_attributes())``."""
    queue = _FactoryQueue()
    return {"on_response_sent": queue, "defer": queue.defer}


def _with_queue(request: HttpRequest) -> HttpRequest:
    return deferring(request)


class _FactoryQueue(Queue):
    __slots__ = ()
    where = "request.defer()"

    def __init__(self) -> None:
        self._calls = None


class RequestFactory(DjangoRequestFactory):
    """Django's RequestFactory whose requests have ``defer`` and ``on_response_sent``."""

    def request(self, **request: Any) -> Any:
        return _with_queue(super().request(**request))


class AsyncRequestFactory(DjangoAsyncRequestFactory):
    """Django's AsyncRequestFactory whose requests have ``defer`` and ``on_response_sent``."""

    def request(self, **request: Any) -> Any:
        return _with_queue(super().request(**request))
