"""Attach ``request.defer`` / ``request.on_response_sent``; hand off when the response is sent.

The hand-off point is the close of the response the server actually sent. Two routes lead there,
both idempotent:

* a closer appended to the ``_resource_closers`` of the response this middleware returns: the
  server calls ``response.close()`` after writing the body (WSGI: in the request thread; ASGI:
  through ``sync_to_async``), streaming and file responses included;
* ``request_finished``, which Django sends from every ``close()`` and, under ASGI, also when
  the client disconnected and no response is closed at all (Django >= 5.0). It finds the queue
  through a context variable set at ``request_started``, so it also works when an outer
  middleware swapped the response (``ConditionalGetMiddleware``'s 304) or when this middleware
  is not the outermost. Under ASGI its sync receivers run in the request's thread-sensitive
  thread, i.e. after a sync view that is still running has returned.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.signals import request_finished, request_started
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from . import conf
from .queues import ResponseQueue, current


class _Slot:
    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: ResponseQueue | None = None


# Set by request_started in the handler's context, which both the middleware (a child
# context) and the request_finished receivers (the same or a child context) can see.
_slot: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar(
    "after_response_slot", default=None
)


def _on_request_started(**kwargs: Any) -> None:
    _slot.set(_Slot())


def _on_request_finished(**kwargs: Any) -> None:
    slot = _slot.get()
    if slot is not None and slot.queue is not None:
        queue, slot.queue = slot.queue, None
        queue.flush()


class _FlushOnClose:
    """A response closer. Pickles as a no-op: a response replayed from the cache re-runs nothing."""

    __slots__ = ("queue",)

    def __init__(self, queue: ResponseQueue) -> None:
        self.queue = queue

    def __call__(self) -> None:
        self.queue.flush()

    def __reduce__(self) -> tuple[type[_Replayed], tuple[()]]:
        return (_Replayed, ())


class _Replayed:
    """The closer of a response unpickled from the cache: its calls ran with the original."""

    __slots__ = ()

    def __call__(self) -> None:
        pass


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
        request_started.connect(_on_request_started, dispatch_uid="after_response.started")
        request_finished.connect(_on_request_finished, dispatch_uid="after_response.finished")

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        queue = _begin(request)
        token = current.set(queue)
        try:
            response = self.get_response(request)
        finally:
            current.reset(token)
        response._resource_closers.append(_FlushOnClose(queue))  # type: ignore[union-attr]
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        queue = _begin(request)
        token = current.set(queue)
        try:
            response = await self.get_response(request)  # type: ignore[misc]
        finally:
            current.reset(token)
        response._resource_closers.append(_FlushOnClose(queue))
        return response  # type: ignore[no-any-return]


def _begin(request: HttpRequest) -> ResponseQueue:
    queue = ResponseQueue(request)
    request.on_response_sent = queue  # type: ignore[attr-defined]
    request.defer = queue.defer  # type: ignore[attr-defined]
    slot = _slot.get()
    if slot is not None:
        slot.queue = queue
    return queue
