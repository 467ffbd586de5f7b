"""The middleware under Django's real handlers: WSGI and ASGI, sync and async, all orders."""

from __future__ import annotations

import asyncio
import contextvars
import gzip
import pickle
import threading

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse
from django.test import AsyncClient, Client, override_settings

import after_response
from after_response.middleware import AfterResponseMiddleware

from . import asgi, recorder, views

OURS = "after_response.middleware.AfterResponseMiddleware"
UPDATE_CACHE = "django.middleware.cache.UpdateCacheMiddleware"
FETCH_CACHE = "django.middleware.cache.FetchFromCacheMiddleware"
GZIP = "django.middleware.gzip.GZipMiddleware"
CONDITIONAL = "django.middleware.http.ConditionalGetMiddleware"
SYNC_ONLY = "tests.middlewares.SyncOnlyMiddleware"

ORDERS = {
    # Django's docs put UpdateCacheMiddleware first; ours may go first or just after it, or
    # further down, below the middleware that swap the response.
    "ours-first": [OURS, UPDATE_CACHE, GZIP, CONDITIONAL, FETCH_CACHE],
    "cache-first": [UPDATE_CACHE, OURS, GZIP, CONDITIONAL, FETCH_CACHE],
    "ours-innermost": [UPDATE_CACHE, GZIP, CONDITIONAL, FETCH_CACHE, OURS],
}


def get(client: Client | AsyncClient, path: str, **headers: str):  # type: ignore[no-untyped-def]
    if isinstance(client, AsyncClient):
        return async_to_sync(client.get)(path, headers=headers)
    return client.get(path, headers=headers)


@pytest.fixture(params=["wsgi", "asgi"])
def client(request: pytest.FixtureRequest) -> Client | AsyncClient:
    return Client() if request.param == "wsgi" else AsyncClient()


@pytest.mark.django_db
def test_calls_run_in_order_after_the_response(client):
    response = get(client, "/defer-two/")
    assert response.status_code == 200
    assert recorder.wait_for(2) == ["first", "second"]


@pytest.mark.django_db
def test_async_view_and_coroutine_functions(client):
    get(client, "/async/")
    assert sorted(recorder.wait_for(2)) == ["async-view", "coroutine"]


@pytest.mark.django_db
def test_streaming_hands_off_only_once_the_stream_is_closed():
    response = Client().get("/streaming/")
    assert recorder.names() == []  # nothing streamed yet, nothing handed off
    assert b"".join(response.streaming_content) == b"abc"
    assert recorder.wait_for(4) == ["chunk", "chunk", "chunk", "after-stream"]


@pytest.mark.django_db
def test_file_response_hands_off_after_the_file():
    response = Client().get("/file/")
    assert recorder.names() == []
    assert len(b"".join(response.streaming_content)) == 100_000
    response.close()
    assert recorder.wait_for(1) == ["after-file"]


@pytest.mark.django_db
def test_calls_run_whatever_the_status_and_failures_are_isolated(client, caplog):
    response = get(client, "/failing/")
    assert response.status_code == 500
    assert recorder.wait_for(2) == ["boom", "after-boom"]
    assert after_response.drain(recorder.WAIT)
    assert "Deferred call tests.recorder.fail failed (request: GET failing/)" in caplog.text
    assert "ValueError: boom failed on purpose" in caplog.text


@pytest.mark.django_db
def test_cancel_one_entry(client):
    get(client, "/cancel/")
    assert after_response.drain(recorder.WAIT)
    assert recorder.names() == ["kept-1", "kept-2"]


@pytest.mark.django_db
@pytest.mark.parametrize("order", ORDERS)
def test_cache_conditional_get_and_gzip_in_any_order(client, order):
    cache.clear()
    with override_settings(MIDDLEWARE=ORDERS[order]):
        first = get(client, "/cacheable/", accept_encoding="gzip")
        assert first.status_code == 200
        assert gzip.decompress(first.content) == b"cached body " * 50
        assert recorder.wait_for(1) == ["cacheable"]

        # Replayed from the cache: the view does not run, and nothing runs again.
        again = get(client, "/cacheable/", accept_encoding="gzip")
        assert again.status_code == 200
        assert gzip.decompress(again.content) == b"cached body " * 50

        # A 304 swapped in by ConditionalGetMiddleware, for a response the view did make.
        cache.clear()
        not_modified = get(client, "/cacheable/", if_none_match='"v1"')
        assert not_modified.status_code == 304
        assert recorder.wait_for(2) == ["cacheable", "cacheable"]

        cache.clear()
        rendered = get(client, "/template/")
        assert rendered.status_code == 200
        assert get(client, "/template/").content == rendered.content  # from the cache
        assert recorder.wait_for(3) == ["cacheable", "cacheable", "template"]
    assert after_response.drain(recorder.WAIT)
    assert recorder.names() == ["cacheable", "cacheable", "template"]


def test_nothing_of_ours_is_on_the_response_the_middleware_returns():
    """What the cache middleware pickles carries no closer of ours: the hand-off hangs on the
    request's close(), which Django's handler adds to the final response after the middleware."""
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    response = AfterResponseMiddleware(lambda r: HttpResponse("ok"))(request)
    assert response._resource_closers == []
    replayed = pickle.loads(pickle.dumps(response))
    assert replayed.content == b"ok"
    request.defer(recorder.record, "late")
    request.close()  # what the handler's closer runs: Django's close(), then the hand-off
    assert request.on_response_sent.sent
    assert recorder.wait_for(1) == ["late"]


class ProjectASGIHandler(ASGIHandler):
    """A project's own handler class: Django sends request_finished with it as the sender."""


@pytest.mark.django_db
@pytest.mark.parametrize("handler", [ASGIHandler, ProjectASGIHandler])
@pytest.mark.parametrize("stack", [[OURS], [OURS, SYNC_ONLY]], ids=["async-stack", "sync-stack"])
def test_asgi_disconnect_hands_off_after_the_sync_view_returns(stack, handler):
    """Django >= 5.0 closes no response when the client disconnects; request_finished fires.

    The client goes away while the sync view works, and the view defers again afterwards: it
    is let go 50 ms of event loop time after the disconnect message, by when Django has
    cancelled the request (a few loop iterations), however busy the machine. Depending on the
    Django version and the stack, Django either waits for the view before it sends
    request_finished, or sends it at once and our receiver queues behind the view in the
    request's thread-sensitive thread: either way the queue is handed over after the view has
    returned, and nothing it deferred is lost.
    """
    disconnected = threading.Event()

    async def disconnect_once_view_works() -> None:
        await asyncio.to_thread(recorder.wait_for, 1)  # "view-waiting"
        disconnected.set()
        asyncio.get_running_loop().call_later(0.05, views.view_may_finish.set)

    views.view_may_finish.clear()
    try:
        with override_settings(MIDDLEWARE=stack):
            # In an empty context, as in a server's event loop thread: nothing left behind by
            # the WSGI requests of other tests may help the hand-off find the queue.
            sent = contextvars.Context().run(
                async_to_sync(asgi.request),
                "/slow/",
                disconnect=disconnect_once_view_works,
                app=handler(),
            )
    finally:
        views.view_may_finish.clear()
    assert disconnected.is_set()
    assert sent == []  # no response was sent at all
    assert recorder.wait_for(4) == ["view-waiting", "view-done", "before-wait", "after-wait"]


@pytest.mark.django_db
def test_asgi_handler_hands_off_on_close():
    sent = async_to_sync(asgi.request)("/defer-two/")
    assert sent[0]["status"] == 200
    assert recorder.wait_for(2) == ["first", "second"]


def test_the_middleware_supports_both_modes():
    async def async_view(request):  # type: ignore[no-untyped-def]
        raise AssertionError

    def sync_view(request):  # type: ignore[no-untyped-def]
        raise AssertionError

    assert asyncio.iscoroutinefunction(AfterResponseMiddleware(async_view))
    assert not asyncio.iscoroutinefunction(AfterResponseMiddleware(sync_view))


@pytest.mark.django_db
def test_a_failing_hand_off_is_logged_and_counted(caplog, monkeypatch):
    from after_response import runtime

    class Broken:
        def accept(self, calls: object) -> None:
            raise RuntimeError("bug in the hand-off")

    before = after_response.stats().handoff_errors
    monkeypatch.setattr(runtime, "captures", [Broken()])
    response = Client().get("/defer-two/")  # closing the response must not raise
    monkeypatch.undo()
    assert response.status_code == 200
    assert "could not hand off 2 deferred call(s): tests.recorder.record" in caplog.text
    assert after_response.stats().handoff_errors == before + 1
