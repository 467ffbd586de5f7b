"""Attach ``request.defer`` / ``request.on_response_sent``; hand off when the response is sent.

The hand-off point is the close of the response the server actually sent. Django's handler
appends ``request.close`` to the closers of that final response, whatever the middleware did to
it (``BaseHandler.get_response`` and ``get_response_async``, django/core/handlers/base.py, since
Django 3.0): the middleware gives the request its own ``close`` (it closes the uploaded files as
before, then hands the queue off). So:

* the server's ``response.close()`` hands off (WSGI: in the request thread, after the body;
  ASGI: through ``sync_to_async``), streaming and file responses included;
* a response swapped in by an outer middleware (``ConditionalGetMiddleware``'s 304) still
  carries it, and nothing of ours is on the response the cache middleware pickles, so a
  response replayed from the cache re-runs nothing;
* a WSGI request runs no signal receiver of ours.

Under ASGI, Django >= 5.0 closes no response when the client disconnects while the view runs:
it cancels the request's task (and sends ``request_finished``). In async mode the middleware sees
the cancellation and hands off through ``sync_to_async``, i.e. in the request's thread-sensitive
thread, after a sync view that is still running there has returned. In sync mode (a sync-only
middleware below it) the middleware itself runs in that thread: a ``request_finished``
receiver, connected for ``ASGIHandler`` only and run by Django in that same thread, hands off
the queue the middleware left in a thread-local.

The ways out where Django closes no response are handed off here too: an exception that leaves
the middleware (``DEBUG_PROPAGATE_EXCEPTIONS``, a ``BaseException``), and, under ASGI, a
streaming body that raises while the server sends it (``ASGIHandler.handle`` re-raises before it
closes the response). A queue that still holds calls when it is garbage-collected (a response
that nobody closed) is handed off then, logged and counted: the last resort (queues.py).
A middleware above this one that calls ``get_response`` twice for one request (a retry) gets
one queue for both passes, handed off when the response finally sent is closed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import request_finished
from django.http import FileResponse, HttpRequest
from django.http.response import HttpResponseBase

from . import conf
from .queues import ResponseQueue, current

PATH = "after_response.middleware.AfterResponseMiddleware"

# Sync mode under ASGI: the queue of the request this thread serves (see the module docstring).
_this_thread = threading.local()


def _on_asgi_request_finished(**kwargs: Any) -> None:
    queue = getattr(_this_thread, "queue", None)
    if queue is not None:
        _this_thread.queue = None
        queue.flush()


def _listen_for_asgi_disconnects() -> None:
    # Any sender: ASGIHandler and its subclasses. Connected on the first ASGI request in sync
    # mode, so that a WSGI-only process runs no receiver of ours.
    request_finished.connect(_on_asgi_request_finished, dispatch_uid="after_response.asgi_finished")


class AfterResponseMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        if not apps.is_installed("after_response"):
            # Without the app its system checks never run: a bad setting would pass them.
            raise ImproperlyConfigured(
                f"{PATH} is in MIDDLEWARE but 'after_response' is not in INSTALLED_APPS: "
                "add it there."
            )
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        conf.get()  # a bad setting fails at start-up, not on the first deferred call
        self._listening = False

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        queue = _begin(request)
        under_asgi = request.__class__ is not WSGIRequest
        if under_asgi:  # see the module docstring
            if not self._listening:
                _listen_for_asgi_disconnects()
                self._listening = True
            _this_thread.queue = queue
        token = current.set(queue)
        try:
            response: HttpResponseBase = self.get_response(request)  # type: ignore[assignment]
        except BaseException:
            queue.flush()  # no response of ours will be closed
            raise
        finally:
            current.reset(token)
        queue.status = response.status_code
        if under_asgi and response.streaming:
            _guard_stream(response, queue)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        queue = _begin(request)
        token = current.set(queue)
        try:
            response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
        except asyncio.CancelledError:
            # The client went away: no response will be closed. Hand off in the request's
            # thread-sensitive thread, behind a sync view that may still be running there.
            await sync_to_async(queue.flush)()
            raise
        except BaseException:
            queue.flush()
            raise
        finally:
            current.reset(token)
        queue.status = response.status_code
        if response.streaming:
            _guard_stream(response, queue)
        return response


def _begin(request: HttpRequest) -> ResponseQueue:
    queue = request.__dict__.get("on_response_sent")
    if queue.__class__ is ResponseQueue and not queue.sent:
        return queue  # a second pass (a retrying middleware)
    queue = ResponseQueue(request)
    request.on_response_sent = queue  # type: ignore[attr-defined]
    request.defer = queue.defer  # type: ignore[attr-defined]
    request.close = queue.request_closed  # type: ignore[method-assign]
    return queue


def _guard_stream(response: Any, queue: ResponseQueue) -> None:
    """Under ASGI, hand off if the streaming body raises: Django then closes no response.

    A FileResponse is left alone (replacing its content would lose the file's own closing).
    """
    if isinstance(response, FileResponse):
        return
    if response.is_async:
        response.streaming_content = _guarded_async(response.streaming_content, queue)
    else:
        response.streaming_content = _guarded(response.streaming_content, queue)


def _guarded(content: Iterator[bytes], queue: ResponseQueue) -> Iterator[bytes]:
    try:
        yield from content
    except BaseException:
        queue.flush()
        raise


async def _guarded_async(
    content: AsyncIterator[bytes], queue: ResponseQueue
) -> AsyncIterator[bytes]:
    try:
        async for chunk in content:
            yield chunk
    except BaseException:
        queue.flush()
        raise


class _NeedsMiddleware:
    """``HttpRequest.defer`` / ``.on_response_sent`` until the middleware sets its own.

    A request that did not go through the middleware gets an error that says the fix instead
    of a bare ``AttributeError``. Installed by the app's ``ready()``.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, request: object, owner: type | None = None) -> Any:
        if request is None:
            return self
        raise AttributeError(
            f"request.{self.name} needs after_response's middleware, and this request did not "
            f"go through it: add '{PATH}' to MIDDLEWARE (near the top). In tests, make requests "
            "with after_response.testing.RequestFactory."
        )


def install_hints() -> None:
    for name in ("defer", "on_response_sent"):
        if name not in HttpRequest.__dict__:
            setattr(HttpRequest, name, _NeedsMiddleware(name))
