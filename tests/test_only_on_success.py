"""Calls that run only if the response sent was a success (status below 400).

By default every call runs whatever the response (README: "Calls run whatever the response
status"); ``add(..., only_on_success=True)`` or ``AFTER_RESPONSE_ONLY_ON_SUCCESS = True`` hold a
call for a successful response: after a 4xx or 5xx, or when no response was sent, it is skipped
and counted in ``stats().skipped``.
"""

from __future__ import annotations

import asyncio

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings
from django.urls import clear_script_prefix, path

import after_response

from . import asgi, recorder

WAIT = recorder.WAIT


def _defer(request: HttpRequest, status: int) -> HttpResponse:
    request.on_response_sent.add(recorder.record, ("held",), only_on_success=True)  # type: ignore[attr-defined]
    request.on_response_sent.add(recorder.record, ("always",), only_on_success=False)  # type: ignore[attr-defined]
    request.defer(recorder.record, "default")  # type: ignore[attr-defined]
    if status == 0:
        raise RuntimeError("no response from the view")
    return HttpResponse(status=status)


def sync_view(request: HttpRequest, status: int) -> HttpResponse:
    return _defer(request, status)


async def async_view(request: HttpRequest, status: int) -> HttpResponse:
    return _defer(request, status)


urlpatterns = [
    path("sync/<int:status>/", sync_view),
    path("async/<int:status>/", async_view),
]


def wsgi(path: str) -> None:
    environ = RequestFactory().get(path).environ
    result = WSGIHandler()(environ, lambda status, headers: None)
    try:
        b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]
        clear_script_prefix()


def serve(handler: str, status: int) -> list[str]:
    before = after_response.stats()
    if handler == "wsgi":
        wsgi(f"/sync/{status}/")
    else:
        asyncio.run(asgi.request(f"/async/{status}/"))
    assert after_response.drain(WAIT)
    after = after_response.stats()
    ran = sorted(recorder.names())
    skipped = after.skipped - before.skipped
    assert after.accepted - before.accepted == 3
    assert len(ran) + skipped == 3, (ran, skipped)
    return ran


@override_settings(ROOT_URLCONF=__name__)
@pytest.mark.parametrize("handler", ["wsgi", "asgi"])
@pytest.mark.parametrize(
    ("status", "ran"),
    [
        (200, ["always", "default", "held"]),
        (302, ["always", "default", "held"]),
        (400, ["always", "default"]),
        (404, ["always", "default"]),
        (500, ["always", "default"]),
        (0, ["always", "default"]),  # the view raised: Django's 500
    ],
)
def test_a_call_held_for_success_runs_only_after_a_successful_response(handler, status, ran):
    assert serve(handler, status) == ran


@override_settings(ROOT_URLCONF=__name__, AFTER_RESPONSE_ONLY_ON_SUCCESS=True)
@pytest.mark.parametrize("handler", ["wsgi", "asgi"])
def test_the_setting_holds_every_call_that_does_not_say_otherwise(handler):
    assert serve(handler, 500) == ["always"]
    recorder.reset()
    assert serve(handler, 201) == ["always", "default", "held"]


@override_settings(ROOT_URLCONF=__name__, DEBUG_PROPAGATE_EXCEPTIONS=True)
def test_no_response_sent_is_no_success():
    before = after_response.stats()
    with pytest.raises(RuntimeError, match="no response from the view"):
        wsgi("/sync/0/")
    assert after_response.drain(WAIT)
    assert sorted(recorder.names()) == ["always", "default"]
    assert after_response.stats().skipped - before.skipped == 1


def test_outside_a_request_a_held_call_runs():
    queue = after_response.current_queue()
    queue.add(recorder.record, ("outside",), only_on_success=True)
    assert after_response.drain(WAIT)
    assert recorder.names() == ["outside"]


def test_only_on_success_must_be_a_bool_or_none():
    with pytest.raises(TypeError, match="only_on_success must be True, False or None"):
        after_response.current_queue().add(recorder.record, only_on_success="yes")  # type: ignore[arg-type]
