"""What a deferred call (and a drop-in thread's work) carries from where it was deferred.

Carried: the deferring code's context variables (a request id, a structlog binding, an
OpenTelemetry context, Sentry's scopes), each call in a copy of its own; the values of
``carry_context()`` pairs. Never carried: asgiref ``Local`` data (Django's cache clients and
connections), asgiref's executor bookkeeping, the request and its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache import caches
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.test import override_settings
from django.urls import path

import after_response
from after_response import carry, signals
from after_response.threads import Thread, ThreadPoolExecutor

from . import asgi, recorder
from .test_calls import wsgi_get

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
WAIT = recorder.WAIT


def see(name: str) -> None:
    recorder.record(name, request_id.get(None))
    request_id.set("changed by the call")  # must not reach the next call of the request


def sync_view(request: HttpRequest) -> HttpResponse:
    request_id.set(request.headers["X-Request-Id"])
    request.defer(see, "first")  # type: ignore[attr-defined]
    request.defer(see, "second")  # type: ignore[attr-defined]
    return HttpResponse("ok")


async def async_view(request: HttpRequest) -> HttpResponse:
    request_id.set(request.headers["X-Request-Id"])
    request.defer(see, "first")  # type: ignore[attr-defined]
    request.defer(see, "second")  # type: ignore[attr-defined]
    return HttpResponse("ok")


def thread_bound(where: dict[str, Any]) -> None:
    """What the call uses, directly and through async_to_sync (which re-homes Local data)."""

    async def inside() -> tuple[int, int]:
        # Thread-sensitive work from inside the call must neither refuse nor wait on the
        # request's executors.
        return await sync_to_async(
            lambda: (id(caches["default"]), id(connections["default"])), thread_sensitive=True
        )()

    cache_there, connection_there = async_to_sync(inside)()
    recorder.record(
        "thread-bound",
        {
            "cache": id(caches["default"]) in (where["cache"],),
            "connection": id(connections["default"]) in (where["connection"],),
            "cache via async_to_sync": cache_there == where["cache"],
            "connection via async_to_sync": connection_there == where["connection"],
        },
    )


async def thread_bound_view(request: HttpRequest) -> HttpResponse:
    where = {"cache": id(caches["default"]), "connection": id(connections["default"])}
    request.defer(thread_bound, where)  # type: ignore[attr-defined]
    return HttpResponse("ok")


held = threading.Event()
holding = threading.Event()


def hold() -> None:
    holding.set()
    held.wait(WAIT)


def block_view(request: HttpRequest) -> HttpResponse:
    request.defer(hold)  # type: ignore[attr-defined]
    return HttpResponse("ok")


requests: list[weakref.ref[HttpRequest]] = []


def remembered_view(request: HttpRequest) -> HttpResponse:
    request_id.set("remembered")
    requests.append(weakref.ref(request))
    request.defer(see, "waited")  # type: ignore[attr-defined]
    return HttpResponse("ok")


urlpatterns = [
    path("sync/", sync_view),
    path("async/", async_view),
    path("thread-bound/", thread_bound_view),
    path("block/", block_view),
    path("remembered/", remembered_view),
]
carrying = override_settings(ROOT_URLCONF=__name__)


@carrying
def test_a_call_runs_with_its_requests_context_variables_each_in_a_copy_wsgi():
    wsgi_get("/sync/", HTTP_X_REQUEST_ID="wsgi-1")
    assert after_response.drain(WAIT)
    assert sorted(recorder.calls) == [("first", "wsgi-1"), ("second", "wsgi-1")]


@carrying
def test_a_call_runs_with_its_requests_context_variables_each_in_a_copy_asgi():
    asyncio.run(asgi.request("/async/", headers=[(b"x-request-id", b"asgi-1")]))
    assert after_response.drain(WAIT)
    assert sorted(recorder.calls) == [("first", "asgi-1"), ("second", "asgi-1")]


@carrying
@pytest.mark.django_db(transaction=True)
def test_nothing_bound_to_the_requests_thread_is_carried():
    """Under ASGI, where the request's cache clients live in a context variable (asgiref
    Local), the call uses its own, even through async_to_sync; and its own connection."""
    asyncio.run(asgi.request("/thread-bound/"))
    assert after_response.drain(WAIT)
    assert recorder.calls == [
        (
            "thread-bound",
            {
                "cache": False,
                "connection": False,
                "cache via async_to_sync": False,
                "connection via async_to_sync": False,
            },
        )
    ]


@carrying
@override_settings(AFTER_RESPONSE_WORKERS=1)
def test_the_request_is_collectable_while_its_calls_wait_in_the_backlog():
    held.clear()
    holding.clear()
    requests.clear()
    try:
        wsgi_get("/block/")
        assert holding.wait(WAIT)
        wsgi_get("/remembered/")
        assert after_response.stats().backlog == 1  # the call waits behind the held one
        gc.collect()
        assert requests[0]() is None, gc.get_referrers(requests[0]())
    finally:
        held.set()
    assert after_response.drain(WAIT)
    assert recorder.calls == [("waited", "remembered")]


@carrying
@override_settings(AFTER_RESPONSE_CARRY_CONTEXT=False)
def test_carrying_context_variables_can_be_turned_off():
    wsgi_get("/sync/", HTTP_X_REQUEST_ID="off")
    assert after_response.drain(WAIT)
    assert sorted(recorder.calls) == [("first", None), ("second", None)]


# -- carry_context() ------------------------------------------------------------------------

local = threading.local()
restored: list[str] = []


def capture_local() -> str | None:
    return getattr(local, "request_id", None)


@contextlib.contextmanager
def restore_local(value: str | None) -> Iterator[None]:
    local.request_id = value
    try:
        yield
    finally:
        del local.request_id
        restored.append(f"left {value}")


def see_local(name: str) -> None:
    recorder.record(name, getattr(local, "request_id", None))


def local_view(request: HttpRequest) -> HttpResponse:
    local.request_id = request.headers["X-Request-Id"]
    try:
        request.defer(see_local, "local")  # type: ignore[attr-defined]
    finally:
        del local.request_id
    return HttpResponse("ok")


urlpatterns.append(path("local/", local_view))


@pytest.fixture
def pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(carry, "_pairs", ())  # registered for this test only
    restored.clear()


@carrying
def test_a_capture_restore_pair_carries_what_context_variables_do_not(pairs):
    after_response.carry_context(capture_local, restore_local)
    wsgi_get("/local/", HTTP_X_REQUEST_ID="local-1")
    assert after_response.drain(WAIT)
    assert recorder.calls == [("local", "local-1")]
    assert restored == ["left local-1"]


def test_carry_context_refuses_what_it_cannot_call(pairs):
    with pytest.raises(TypeError, match="carry_context\\(\\) needs a callable restore, got 'str'"):
        after_response.carry_context(capture_local, "restore_local")  # type: ignore[arg-type]
    assert carry._pairs == ()


def broken(value: object = None) -> Any:
    raise RuntimeError("broken pair")


@carrying
@pytest.mark.parametrize("which", ["capture", "restore"])
def test_a_broken_pair_is_logged_and_the_call_still_runs(pairs, which, caplog):
    if which == "capture":
        after_response.carry_context(broken, restore_local)
    else:
        after_response.carry_context(capture_local, broken)
    wsgi_get("/local/", HTTP_X_REQUEST_ID="local-2")
    assert after_response.drain(WAIT)
    assert len(recorder.calls) == 1
    failures = [r for r in caplog.records if f"carry_context {which}" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info


# -- logs and signals -----------------------------------------------------------------------


class SeesRequestId(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str | None, Any]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.seen.append((record.getMessage(), request_id.get(None), getattr(record, "call", None)))
        return True


def fail() -> None:
    raise RuntimeError("failed on purpose")


def slow() -> None:
    holding.set()
    held.wait(WAIT)


def logged_view(request: HttpRequest) -> HttpResponse:
    request_id.set(request.headers["X-Request-Id"])
    request.defer(fail)  # type: ignore[attr-defined]
    request.defer(slow)  # type: ignore[attr-defined]
    return HttpResponse("ok")


urlpatterns.append(path("logged/", logged_view))


@carrying
@override_settings(AFTER_RESPONSE_SLOW_CALL=0.05)
def test_the_librarys_log_lines_about_a_call_carry_its_context_and_the_call():
    held.clear()
    holding.clear()
    seen = SeesRequestId()
    library_logger = logging.getLogger("after_response")
    library_logger.addFilter(seen)
    try:
        wsgi_get("/logged/", HTTP_X_REQUEST_ID="logged-1")
        assert holding.wait(WAIT)
        recorder.settled(lambda: [s for s in seen.seen if "has been running" in s[0]], bool, WAIT)
    finally:
        held.set()
        library_logger.removeFilter(seen)
    assert after_response.drain(WAIT)
    failed = [s for s in seen.seen if "failed" in s[0]]
    slow_ = [s for s in seen.seen if "has been running" in s[0]]
    assert [(request, call.name) for _, request, call in failed] == [
        ("logged-1", "tests.test_carry.fail")
    ]
    assert [(request, call.name) for _, request, call in slow_] == [
        ("logged-1", "tests.test_carry.slow")
    ]


@carrying
def test_signal_receivers_run_in_the_calls_context():
    seen: list[tuple[str, str | None]] = []

    def started(sender: Any, call: Any, **kwargs: Any) -> None:
        seen.append(("started", request_id.get(None)))

    def finished(sender: Any, call: Any, **kwargs: Any) -> None:
        seen.append(("finished", request_id.get(None)))

    signals.call_started.connect(started, weak=False)
    signals.call_finished.connect(finished, weak=False)
    try:
        wsgi_get("/sync/", HTTP_X_REQUEST_ID="signals-1")
        assert after_response.drain(WAIT)
    finally:
        signals.call_started.disconnect(started)
        signals.call_finished.disconnect(finished)
    # In the call's own copy: call_started sees the request's id (whatever the call before
    # changed in its copy), call_finished what the call left there.
    assert (
        sorted(seen) == [("finished", "changed by the call")] * 2 + [("started", "signals-1")] * 2
    )


# -- the drop-in threads --------------------------------------------------------------------


def in_context(value: str, fn: Any) -> Any:
    return contextvars.Context().run(lambda: (request_id.set(value), fn())[1])


def test_a_thread_carries_the_context_of_the_code_that_starts_it():
    def started() -> str | None:
        seen: list[str | None] = []
        thread = Thread(target=lambda: seen.append(request_id.get(None)))
        thread.start()
        thread.join(WAIT)
        return seen[0]

    assert in_context("thread-1", started) == "thread-1"


def test_a_thread_pool_job_carries_the_context_of_the_code_that_submits_it():
    with ThreadPoolExecutor(2) as pool:
        future = in_context("pool-1", lambda: pool.submit(request_id.get, None))
        assert future.result(WAIT) == "pool-1"
        unset = contextvars.Context().run(pool.submit, request_id.get, None)
        assert unset.result(WAIT) is None


def test_structlog_and_opentelemetry_context_is_carried():
    structlog = pytest.importorskip("structlog")
    otel_context = pytest.importorskip("opentelemetry.context")

    def deferring() -> None:
        structlog.contextvars.bind_contextvars(request_id="structlog-1")
        otel_context.attach(otel_context.set_value("tenant", "north"))
        after_response.defer(
            lambda: recorder.record(
                "seen",
                (
                    structlog.contextvars.get_contextvars().get("request_id"),
                    otel_context.get_value("tenant"),
                ),
            )
        )

    contextvars.Context().run(deferring)
    recorder.wait_for(1)
    assert recorder.calls == [("seen", ("structlog-1", "north"))]


@pytest.fixture
def sentry_events() -> Iterator[list[dict[str, Any]]]:
    """sentry_sdk initialised in this process, its events kept here; inactive again after."""
    sentry_sdk = pytest.importorskip("sentry_sdk")
    from sentry_sdk.transport import Transport

    events: list[dict[str, Any]] = []

    class Keep(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            event = envelope.get_event()
            if event is not None:
                events.append(event)

    sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", transport=Keep(), default_integrations=True)
    try:
        yield events
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)


def test_sentry_scopes_reach_the_drop_in_threads_and_calls_as_forks(sentry_events):
    import sentry_sdk

    def report(where: str) -> None:
        sentry_sdk.set_tag("set_by", where)  # in the fork: never seen by the starting code
        sentry_sdk.capture_message(f"from {where}")

    def start_all() -> None:
        with sentry_sdk.isolation_scope():
            sentry_sdk.set_tag("shop", "north")
            thread = Thread(target=report, args=("thread",))
            thread.start()
            thread.join(WAIT)
            with ThreadPoolExecutor(1) as pool:
                pool.submit(report, "pool").result(WAIT)
            after_response.defer(report, "call")
            assert after_response.drain(WAIT)
            sentry_sdk.capture_message("from the starter")

    contextvars.Context().run(start_all)
    sentry_sdk.flush(WAIT)
    tags = {event["message"]: event.get("tags", {}) for event in sentry_events}
    assert tags == {
        "from thread": {"shop": "north", "set_by": "thread"},
        "from pool": {"shop": "north", "set_by": "pool"},
        "from call": {"shop": "north", "set_by": "call"},
        "from the starter": {"shop": "north"},
    }
