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
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import request_finished
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from . import conf
from .queues import ResponseQueue, current

# Sync mode: the queue of the request this thread serves (see the module docstring).
_this_thread = threading.local()


def _on_asgi_request_finished(**kwargs: Any) -> None:
    queue = getattr(_this_thread, "queue", None)
    if queue is not None:
        _this_thread.queue = None
        queue.flush()


class AfterResponseMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        conf.get()  # a bad setting fails at start-up, not on the first deferred call
        # For ASGIHandler only: Django's Signal skips it for WSGI requests before calling it.
        request_finished.connect(
            _on_asgi_request_finished,
            sender=ASGIHandler,
            dispatch_uid="after_response.asgi_finished",
        )

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        queue = _begin(request)
        if request.__class__ is not WSGIRequest:  # under ASGIHandler (see the docstring)
            _this_thread.queue = queue
        token = current.set(queue)
        try:
            return self.get_response(request)
        finally:
            current.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        queue = _begin(request)
        token = current.set(queue)
        try:
            return await self.get_response(request)  # type: ignore[no-any-return,misc]
        except asyncio.CancelledError:
            # The client went away: no response will be closed. Hand off in the request's
            # thread-sensitive thread, behind a sync view that may still be running there.
            await sync_to_async(queue.flush)()
            raise
        finally:
            current.reset(token)


def _begin(request: HttpRequest) -> ResponseQueue:
    queue = ResponseQueue(request)
    request.on_response_sent = queue  # type: ignore[attr-defined]
    request.defer = queue.defer  # type: ignore[attr-defined]
    request.close = queue.request_closed  # type: ignore[method-assign]
    return queue
