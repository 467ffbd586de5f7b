"""Types to annotate views with: django-stubs' ``HttpRequest`` knows nothing of ``defer``.

from after_response.types import DeferringRequest

def contact(request: DeferringRequest) -> HttpResponse:
    request.defer(send_mail, subject, body, sender, [admin])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, Protocol

from django.http import HttpRequest

from .deferred import DeferredCall
from .queues import Queue

P = ParamSpec("P")


class Defer(Protocol):
    def __call__(
        self, fn: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs
    ) -> DeferredCall: ...


class SupportsDefer(Protocol):
    """Anything with ``defer`` and ``on_response_sent``: a request that went through the
    middleware, Django REST framework's ``Request`` wrapping one, a request given them by
    ``after_response.testing.deferring()``. For code that only defers."""

    @property
    def on_response_sent(self) -> Queue: ...

    @property
    def defer(self) -> Defer: ...


class DeferringRequest(HttpRequest):
    """An ``HttpRequest`` that went through ``AfterResponseMiddleware``. For annotations only."""

    on_response_sent: Queue
    defer: Defer
