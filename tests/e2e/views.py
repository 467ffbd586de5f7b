"""Views of the end-to-end project; what their deferred calls did lands in ``Record`` rows."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from tests.models import Record

BODY = b"0123456789abcdef" * 4096  # 64 KiB: more than one socket write
CHUNK = 8192
HOLD_LIMIT = 10.0  # seconds a held stream waits for the test's go-ahead
CALL_HOLD_LIMIT = 30.0  # seconds a held call waits for it: longer than any request's timeout
POLL_INTERVAL = 0.02  # seconds


def ready(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"ready {os.getpid()}")


def slow(request: HttpRequest, name: str) -> HttpResponse:
    """Defers a call that works until the test has written the row ``<name>/go``; the body has
    a Content-Length."""
    request.defer(write_marker_when_told, name)  # type: ignore[attr-defined]
    response = HttpResponse(BODY)
    response["Content-Length"] = str(len(BODY))  # as CommonMiddleware would
    return _stamped(response)


def slow_stream(request: HttpRequest, name: str) -> StreamingHttpResponse:
    """Like ``slow``, streamed: no Content-Length, the body is chunked."""
    request.defer(write_marker_when_told, name)  # type: ignore[attr-defined]
    return _stamped(_stream(request))


def held_stream(request: HttpRequest, name: str) -> StreamingHttpResponse:
    """Sends one chunk, then the rest once the test has written the row ``<name>/go``."""
    request.defer(write_marker, name)  # type: ignore[attr-defined]

    def go_ahead() -> bool:
        return Record.objects.filter(name=f"{name}/go").exists()

    return _stamped(_stream(request, hold=go_ahead))


def _stream(request: HttpRequest, hold: Callable[[], bool] | None = None) -> StreamingHttpResponse:
    # An async iterator under ASGI, a sync one under WSGI: Django would otherwise read the
    # whole iterator into memory before it sends the first chunk (and warn).
    parts = [BODY[start : start + CHUNK] for start in range(0, len(BODY), CHUNK)]

    def chunks() -> Iterator[bytes]:
        yield parts[0]
        if hold is not None:
            deadline = time.monotonic() + HOLD_LIMIT
            while not hold():
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never let the held stream go on")
                time.sleep(POLL_INTERVAL)
        yield from parts[1:]

    async def async_chunks() -> AsyncIterator[bytes]:
        yield parts[0]
        if hold is not None:
            deadline = time.monotonic() + HOLD_LIMIT
            while not await sync_to_async(hold)():
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never let the held stream go on")
                await asyncio.sleep(POLL_INTERVAL)
        for part in parts[1:]:
            yield part

    if isinstance(request, ASGIRequest):
        return StreamingHttpResponse(async_chunks())
    return StreamingHttpResponse(chunks())


def _stamped(response: HttpResponse | StreamingHttpResponse):  # type: ignore[no-untyped-def]
    response["X-Deferred-At"] = repr(time.time())
    response["X-Pid"] = str(os.getpid())
    return response


def write_marker(name: str) -> None:
    started = time.time()
    Record.objects.create(name=f"{name}/started", value=str(os.getpid()))
    _write_finished(name, started)


def write_marker_when_told(name: str) -> None:
    """Works until the row ``<name>/go`` exists: the test decides when the call ends, whatever
    the load of the machine."""
    started = time.time()
    # The first write opens this thread's connection, which stays open while the call works,
    # as it would in real work (a query, then an API call or an e-mail).
    Record.objects.create(name=f"{name}/started", value=str(os.getpid()))
    deadline = time.monotonic() + CALL_HOLD_LIMIT
    while not Record.objects.filter(name=f"{name}/go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never wrote {name}/go")
        time.sleep(POLL_INTERVAL)
    _write_finished(name, started)


def _write_finished(name: str, started: float) -> None:
    Record.objects.create(
        name=name,
        value=json.dumps({"started": started, "finished": time.time(), "pid": os.getpid()}),
    )


def write(request: HttpRequest, name: str) -> HttpResponse:
    request.defer(Record.objects.create, name=name, value=str(os.getpid()))  # type: ignore[attr-defined]
    return HttpResponse(name)


def on_success(request: HttpRequest, status: int, name: str) -> HttpResponse:
    """Holds one write for a successful response, then always writes a marker: calls of one
    request run in order, so once the marker exists the held write ran or never will."""
    request.on_response_sent.add(  # type: ignore[attr-defined]
        Record.objects.create, kwargs={"name": f"{name}/held"}, only_on_success=True
    )
    request.defer(Record.objects.create, name=f"{name}/marker")  # type: ignore[attr-defined]
    return HttpResponse(name, status=status)


async def async_write(request: HttpRequest, name: str) -> HttpResponse:
    # A coroutine function, deferred from an async view: the pool runs it with async_to_sync
    # and its sync_to_async ORM call comes back to the worker thread's connection.
    request.defer(Record.objects.acreate, name=name, value=str(os.getpid()))  # type: ignore[attr-defined]
    return HttpResponse(name)
