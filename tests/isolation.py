"""Per-request state for tests/test_faults.py's isolation test.

A middleware sets a user, a time zone and a urlconf from request headers, the way real sites set
them from the session or the host name, and keeps the user where request-local helpers do (a
context variable, an asgiref ``Local``). The views defer a call that records what it sees, then
leaves state behind for the next call on its worker thread, as careless code does.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import zoneinfo
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from asgiref.local import Local
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, get_urlconf, path, reverse, set_urlconf
from django.utils import timezone, translation

from . import recorder

# Carried into the request's calls (like a request id), each into its own request's calls.
current_user: contextvars.ContextVar[str] = contextvars.ContextVar("current_user")
# Never carried: thread-local by asgiref's contract (Django keeps connections and caches in these).
user_local = Local()

# Set by the test: both requests wait here, so that they are in their views at the same time.
rendezvous: threading.Barrier | None = None
async_rendezvous: asyncio.Barrier | None = None


class PerRequestState:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        self._begin(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        self._begin(request)
        return await self.get_response(request)

    @staticmethod
    def _begin(request: HttpRequest) -> None:
        # Never reset: a call must see its own request's values, never another request's or
        # what the call before it on the same worker left behind.
        username = request.headers["X-User"]
        request.user = SimpleNamespace(username=username)  # type: ignore[assignment]
        request.urlconf = request.headers["X-Urlconf"]
        timezone.activate(zoneinfo.ZoneInfo(request.headers["X-Timezone"]))
        current_user.set(username)
        user_local.username = username


def isolated(request: HttpRequest) -> HttpResponse:
    request.defer(see_and_pollute, request.user.username)  # type: ignore[attr-defined]
    assert rendezvous is not None
    rendezvous.wait()
    return HttpResponse(request.user.username)


async def isolated_async(request: HttpRequest) -> HttpResponse:
    request.defer(see_and_pollute, request.user.username)  # type: ignore[attr-defined]
    assert async_rendezvous is not None
    async with asyncio.timeout(recorder.WAIT):
        await async_rendezvous.wait()
    return HttpResponse(request.user.username)


def where(request: HttpRequest) -> HttpResponse:
    return HttpResponse("where")


def see_and_pollute(username: str) -> None:
    recorder.record(
        username,
        {
            "language": translation.get_language(),
            "timezone": timezone.get_current_timezone_name(),
            "urlconf": get_urlconf(),
            "where": reverse("where"),
            "user": current_user.get(None),
            "user_local": getattr(user_local, "username", None),
        },
    )
    translation.activate("it")
    timezone.activate(zoneinfo.ZoneInfo("America/Lima"))
    set_urlconf("tests.urls")
    current_user.set("polluter")
    user_local.username = "polluter"


def urlpatterns_for(site: str) -> list[URLPattern]:
    return [
        path("isolated/", isolated),
        path("isolated-async/", isolated_async),
        path(f"{site}/where/", where, name="where"),
    ]
