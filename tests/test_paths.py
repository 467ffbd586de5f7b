"""Every way a request, a call or the process can go, and what the library promises on each.

Each test here failed before the fix it guards (issues 12 and 13): a queue handed off exactly
once whatever path the request takes, nothing waiting on itself, counters that tell the truth.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django.db import connection, connections, transaction
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings

import after_response
from after_response import deferred, lifecycle, runtime, signals
from after_response.deferred import DeferredCall
from after_response.middleware import AfterResponseMiddleware
from after_response.testing import DeferredCallFailed, raise_inline_failures

from . import asgi, recorder
from .recorder import WAIT

pytestmark = pytest.mark.urls("tests.paths_urls")

OURS = "after_response.middleware.AfterResponseMiddleware"
RETRY = "tests.paths_urls.RetryOn503Middleware"


def until(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """A bounded wait for state another thread updates."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def own_pool() -> Iterator[Any]:
    """A pool of this test's own: shutting it down leaves the suite's pool alone."""
    with override_settings(AFTER_RESPONSE_WORKERS=1):
        yield runtime.get_pool()


def through_middleware(view: Callable[[HttpRequest], HttpResponse]) -> tuple[Any, Any]:
    request = RequestFactory().get("/")
    return request, AfterResponseMiddleware(view)(request)


def defer_late(request: HttpRequest) -> HttpResponse:
    request.defer(recorder.record, "late")  # type: ignore[attr-defined]
    return HttpResponse()


# -- A. every queue that received a call is handed off exactly once ----------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("iterator", ["async", "sync"])
def test_a_streaming_body_that_raises_under_asgi_still_hands_off(monkeypatch, iterator):
    # ASGIHandler re-raises before it closes the response (django/core/handlers/asgi.py,
    # handle()): only the middleware's guard around the body sees it.
    bodies: list[Any] = []
    read_body = ASGIHandler.read_body

    async def remember_body(self: ASGIHandler, receive: Any) -> Any:
        bodies.append(await read_body(self, receive))
        return bodies[-1]

    monkeypatch.setattr(ASGIHandler, "read_body", remember_body)
    accepted = after_response.stats().accepted
    path = "/stream-then-fail/" if iterator == "async" else "/stream-then-fail-sync/"
    with pytest.raises(ValueError, match="on purpose"), warnings.catch_warnings():
        # Django warns that it consumes a sync iterator under ASGI (all of it, at once).
        warnings.filterwarnings("ignore", "StreamingHttpResponse must consume synchronous")
        async_to_sync(asgi.request)(path)
    for body in bodies:
        body.close()  # Django leaves the request body open on that path
    assert recorder.wait_for(1) == ["after-broken-stream"]
    assert after_response.drain(WAIT)
    assert after_response.stats().accepted == accepted + 1


@pytest.mark.django_db
@pytest.mark.parametrize("client", ["sync", "async"])
def test_an_exception_propagated_out_of_the_handler_still_hands_off(settings, client):
    settings.DEBUG_PROPAGATE_EXCEPTIONS = True  # Django re-raises instead of making a 500
    with pytest.raises(ValueError, match="on purpose"):
        if client == "sync":
            Client().get("/raise/")
        else:
            async_to_sync(AsyncClient().get)("/raise/")
    assert recorder.wait_for(1) == ["error-report"]


@pytest.mark.django_db
def test_a_middleware_that_retries_loses_no_pass(settings):
    settings.MIDDLEWARE = [RETRY, OURS]
    assert Client().get("/once/").status_code == 200
    assert recorder.wait_for(2) == ["pass", "pass"]


def test_a_response_never_closed_is_found_by_the_garbage_collector(caplog):
    rescued = after_response.stats().rescued
    request, response = through_middleware(defer_late)
    assert len(request.on_response_sent) == 1
    del request, response  # never closed: the request and its queue are cyclic garbage
    gc.collect()
    assert after_response.drain(WAIT)
    assert recorder.wait_for(1) == ["late"]
    assert after_response.stats().rescued == rescued + 1
    assert "its response was never closed" in caplog.text


def test_drain_can_wait_for_responses_not_closed_yet():
    request, _response = through_middleware(defer_late)
    assert after_response.drain(0.05, wait_for_responses=True) is False
    assert after_response.drain(WAIT)  # by default only handed-off calls count
    # What the handler's closer of that response runs, from the server's thread.
    closer = threading.Thread(target=request.close)
    closer.start()
    assert after_response.drain(WAIT, wait_for_responses=True)
    assert recorder.names() == ["late"]
    closer.join(WAIT)


# -- B. nothing waits on itself ---------------------------------------------------------------


def try_drain() -> None:
    try:
        after_response.drain(1.0)
    except RuntimeError as exc:
        recorder.record("refused", str(exc))
    else:
        recorder.record("drained")


async def try_drain_async() -> None:
    try_drain()


@pytest.mark.parametrize("mode", ["threads", "immediate", "inline"])
@pytest.mark.parametrize("fn", [try_drain, try_drain_async], ids=["function", "coroutine"])
def test_drain_inside_a_call_is_an_error_in_every_mode(monkeypatch, mode, fn):
    if mode == "inline":
        monkeypatch.setattr(lifecycle, "mode", lambda: lifecycle.UWSGI_WITHOUT_THREADS)
    with override_settings(AFTER_RESPONSE_IMMEDIATE=mode == "immediate", AFTER_RESPONSE_WORKERS=1):
        after_response.defer(fn)
        assert recorder.wait_for(1) == ["refused"]
        assert after_response.drain(WAIT)
    assert "where it would wait for itself" in recorder.calls[0][1]


@pytest.mark.django_db(transaction=True)
def test_a_rollback_found_by_the_garbage_collector_never_deadlocks():
    """A pending gate that becomes cyclic garbage is finalized wherever the collector runs,
    here while this thread holds the transition lock (as inside stats())."""
    discarded = after_response.stats().discarded

    def scenario() -> None:
        def suspended_in_atomic() -> Iterator[None]:
            with transaction.atomic():
                after_response.defer(recorder.record, "rolled back")
                yield

        generator = suspended_in_atomic()
        next(generator)
        cycle: list[Any] = [generator]
        cycle.append(cycle)
        del generator, cycle
        with deferred.transition_lock:
            gc.collect()  # closes the generator: the atomic block rolls back, the gate drops
        connection.close()

    thread = threading.Thread(target=scenario)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "deadlocked in the garbage collector"
    assert after_response.drain(WAIT)
    assert after_response.stats().discarded == discarded + 1
    assert recorder.calls == []


def test_a_second_shutdown_waits_for_the_first(own_pool):
    release = threading.Event()
    after_response.defer(release.wait, WAIT)
    until("the call to start", lambda: own_pool.stats().running == 1)
    first: list[bool] = []
    thread = threading.Thread(target=lambda: first.append(after_response.shutdown(WAIT)))
    thread.start()
    until("the first shutdown to start", lambda: own_pool._shutdown_done is not None)
    assert after_response.shutdown(0.05) is False  # the first is still draining
    release.set()
    thread.join(WAIT)
    assert first == [True]
    assert after_response.shutdown(0.05) is True


# -- C. the counters and drain() tell the truth -----------------------------------------------


def test_calls_never_started_are_settled_when_shutdown_gives_up(own_pool, caplog):
    release = threading.Event()
    # One batch (one request's calls) whose first call blocks, and a second batch behind it.
    own_pool.accept(
        [
            DeferredCall(release.wait, (WAIT,), {}),
            DeferredCall(recorder.record, ("same batch",), {}),
        ]
    )
    after_response.defer(recorder.record, "next batch")
    until("the call to start", lambda: own_pool.stats().running == 1)
    assert after_response.shutdown(0.05) is False
    stats = own_pool.stats()
    assert (stats.backlog, stats.dropped, stats.running) == (0, 2, 1)
    assert stats.accepted == stats.running + stats.settled
    assert "2 never started (tests.recorder.record, tests.recorder.record)" in caplog.text
    release.set()
    assert own_pool.drain(WAIT)
    assert recorder.calls == []
    assert own_pool.stats().done == 1


def test_drain_and_stats_follow_a_pool_replaced_by_a_settings_change():
    release = threading.Event()
    with override_settings(AFTER_RESPONSE_WORKERS=1):
        after_response.defer(release.wait, WAIT)
        until("the call to start", lambda: after_response.stats().running == 1)
    # Leaving the block replaced the pool; its call still runs and must be seen.
    assert after_response.drain(0.05) is False
    assert after_response.stats().running == 1
    release.set()
    assert after_response.drain(WAIT)
    assert after_response.stats().running == 0


@pytest.mark.django_db(transaction=True)
def test_a_call_waiting_for_a_commit_across_a_settings_change_runs():
    # The settings change ends first (the pool that accepted the call is replaced), then the
    # transaction commits.
    with transaction.atomic(), override_settings(AFTER_RESPONSE_WORKERS=1):
        after_response.defer(recorder.record, "committed later")
        assert after_response.stats().waiting == 1
    assert recorder.wait_for(1) == ["committed later"]
    assert after_response.drain(WAIT)
    stats = after_response.stats()
    assert (stats.waiting, stats.dropped) == (0, 0)
    assert stats.accepted == stats.settled


@pytest.mark.django_db(transaction=True)
def test_a_child_forked_inside_atomic_neither_runs_nor_counts_the_parents_call():
    read_end, write_end = os.pipe()
    with transaction.atomic():
        after_response.defer(recorder.record, "the parent's")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            try:
                for _, hook, _ in connection.run_on_commit:  # what the child's commit would run
                    hook()
                stats = after_response.stats()
                os.write(write_end, f"{stats.waiting} {stats.accepted} {stats.backlog}".encode())
            finally:
                os._exit(0)
        os.close(write_end)
        child = recorder.child_answer(pid, read_end)
    assert child == "0 0 0"
    assert recorder.wait_for(1) == ["the parent's"]


@pytest.mark.django_db
def test_one_request_cannot_defer_more_than_the_backlog_holds(caplog):
    with override_settings(AFTER_RESPONSE_MAX_PENDING=5):
        Client().get("/many/?n=6")
        assert after_response.drain(WAIT)
        stats = after_response.stats()
        assert (stats.dropped, stats.done, stats.backlog) == (6, 0, 0)
        Client().get("/many/?n=5")
        assert after_response.drain(WAIT)
        assert after_response.stats().done == 5
    assert "more than the backlog holds" in caplog.text


# -- E. failures of every kind are reported ---------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "CancelledError"])
def test_a_base_exception_is_reported_like_any_failure(caplog, name):
    failed: list[str] = []

    def on_failure(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        failed.append(type(exception).__name__)

    signals.call_failed.connect(on_failure)
    try:
        Client().get(f"/base-exception/{name}/")
        assert after_response.drain(WAIT)
        assert after_response.stats().workers >= 1  # the worker lives on
        with override_settings(AFTER_RESPONSE_IMMEDIATE=True):
            Client().get(f"/base-exception/{name}/")
            with pytest.raises(DeferredCallFailed, match=name):
                raise_inline_failures()
    finally:
        signals.call_failed.disconnect(on_failure)
    assert failed == [name, name]
    assert "failed (request: GET base-exception/<str:name>/)" in caplog.text


# -- G. the call sees the request's context ----------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("root_path", ["", "/elsewhere"])
def test_the_call_gets_the_script_prefix_under_asgi(settings, root_path):
    settings.FORCE_SCRIPT_NAME = "/mounted"
    # In an empty context, as in a server: asgiref copies what the request activated (its
    # script prefix) back into the caller's context.
    contextvars.Context().run(async_to_sync(asgi.request), "/prefix/", root_path=root_path)
    recorder.wait_for(1)
    in_view, in_call = recorder.calls[0][1]
    assert in_view[0] == "/mounted/"
    assert in_call == in_view


@pytest.mark.django_db(transaction=True)
def test_with_async_unsafe_allowed_a_rolled_back_call_is_discarded(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # a notebook's event loop

    async def cell() -> None:
        try:
            with transaction.atomic():
                after_response.defer(recorder.record, "committed")
            try:
                with transaction.atomic():
                    after_response.defer(recorder.record, "rolled back")
                    raise ValueError
            except ValueError:
                pass
        finally:
            connections.close_all()  # this async context's own connections (asgiref's Local)

    asyncio.run(cell())
    assert after_response.drain(WAIT)
    assert recorder.names() == ["committed"]


# -- errors that teach (issue 12) --------------------------------------------------------------


def test_a_request_that_skipped_the_middleware_says_how_to_fix_it():
    request = RequestFactory().get("/")
    with pytest.raises(AttributeError, match=f"add '{OURS}' to MIDDLEWARE"):
        request.defer(print)  # type: ignore[attr-defined]
    assert not hasattr(request, "on_response_sent")


@pytest.mark.django_db
def test_a_view_behind_a_stack_without_the_middleware_fails_with_the_fix(settings):
    settings.MIDDLEWARE = []
    with pytest.raises(AttributeError, match="needs after_response's middleware"):
        Client().get("/once/")


def test_the_middleware_refuses_to_load_without_the_app():
    with (
        override_settings(INSTALLED_APPS=["django.contrib.contenttypes", "tests"]),
        pytest.raises(ImproperlyConfigured, match="'after_response' is not in INSTALLED_APPS"),
    ):
        AfterResponseMiddleware(lambda request: HttpResponse())


def test_uvicorn_without_the_lifespan_wrapper_is_reported(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "uvicorn", types.ModuleType("uvicorn"))
    monkeypatch.setattr(lifecycle, "lifespan_drain", False)
    with override_settings(AFTER_RESPONSE_WORKERS=1):
        after_response.defer(recorder.record, "call")
        assert after_response.drain(WAIT)
        assert after_response.stats().problems == (lifecycle.NO_EXIT_HOOK_MESSAGE,)
    assert caplog.text.count("uvicorn runs no exit hook") == 1
    # The wrapper answers the lifespan startup before the first request: no problem then.
    from after_response.asgi import DrainOnShutdown

    messages = [{"type": "lifespan.startup"}]
    sent: list[Any] = []

    async def receive() -> dict[str, str]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the server would send shutdown later
        return {}

    async def send(message: Any) -> None:
        sent.append(message)

    async def serve_startup() -> None:
        app = DrainOnShutdown(lambda scope, receive, send: None)  # type: ignore[arg-type,return-value]
        task = asyncio.ensure_future(app({"type": "lifespan"}, receive, send))
        while not sent:
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(serve_startup())
    assert lifecycle.lifespan_drain
    with override_settings(AFTER_RESPONSE_WORKERS=1):
        after_response.defer(recorder.record, "call")
        assert after_response.drain(WAIT)
        assert after_response.stats().problems == ()
