"""What a deferred call sees and what is refused at the call site."""

from __future__ import annotations

import asyncio
import logging

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory
from django.urls import clear_script_prefix

import after_response
from after_response import signals
from after_response.deferred import State

from . import recorder


def wsgi_get(path: str, **environ: str) -> bytes:
    """Through Django's real WSGIHandler, closing the response as a WSGI server does."""
    from django.core.handlers.wsgi import WSGIHandler

    request_environ = RequestFactory().get(path, **environ).environ
    request_environ["PATH_INFO"] = path.removeprefix(environ.get("SCRIPT_NAME", ""))
    statuses: list[str] = []
    result = WSGIHandler()(request_environ, lambda status, headers: statuses.append(status))
    try:
        body = b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]
        clear_script_prefix()  # the handler set it for this thread, as servers leave it
    assert statuses == ["200 OK"], statuses
    return body


@pytest.mark.django_db
def test_request_context_is_carried_and_nothing_else():
    Client().get("/environment/", headers={"accept-language": "fr"})
    recorder.wait_for(1)
    _, seen = recorder.calls[0]
    assert seen["language"] == "fr"  # activated by LocaleMiddleware during the request
    assert seen["timezone"] == "Europe/Paris"  # activated by the view
    assert seen["thread"].startswith("after_response-")

    # The next call on a worker thread sees that request's context, not the last one's.
    recorder.reset()
    wsgi_get("/prefix/environment/", HTTP_ACCEPT_LANGUAGE="de", SCRIPT_NAME="/prefix")
    recorder.wait_for(1)
    _, seen = recorder.calls[0]
    assert seen["language"] == "de"
    assert seen["script_prefix"] == "/prefix/"


def test_outside_a_request_the_callers_language_is_carried():
    from django.utils import translation

    with translation.override("de"):
        after_response.defer(recorder.record_environment, "shell")
    recorder.wait_for(1)
    assert recorder.calls[0][1]["language"] == "de"
    assert recorder.calls[0][1]["script_prefix"] == "/"


def test_a_call_deferred_by_a_deferred_call_goes_straight_to_the_pool():
    def first() -> None:
        recorder.record("first")
        after_response.defer(recorder.record, "second")

    after_response.defer(first)
    assert recorder.wait_for(2) == ["first", "second"]


def test_coroutine_functions_run_on_a_worker_thread():
    """Through async_to_sync: ORM code it runs with sync_to_async lands on the worker thread,
    whose connections the worker cleans up."""
    import threading

    from asgiref.sync import sync_to_async

    async def coroutine_function(name: str) -> None:
        await asyncio.sleep(0)
        thread = await sync_to_async(lambda: threading.current_thread().name)()
        recorder.record(name, thread)

    after_response.defer(coroutine_function, "async")
    recorder.wait_for(1)
    name, thread = recorder.calls[0]
    assert name == "async" and thread.startswith("after_response-")


def test_failures_are_logged_with_names_never_values(caplog):
    password = "hunter2-secret"

    def change_password(user_id: int, new_password: str) -> None:
        raise RuntimeError("the mail server is down")

    with caplog.at_level(logging.ERROR, logger="after_response"):
        after_response.defer(change_password, 7, new_password=password)
        assert after_response.drain(recorder.WAIT)
    assert "change_password failed" in caplog.text
    assert "RuntimeError: the mail server is down" in caplog.text  # the traceback is there
    assert password not in caplog.text


@pytest.mark.django_db
def test_the_log_names_the_route_not_the_path(caplog):
    Client().get("/failing/?token=abc123")
    assert after_response.drain(recorder.WAIT)
    assert "(request: GET failing/)" in caplog.text
    assert "abc123" not in caplog.text


def test_signals_for_start_finish_and_failure():
    events: list[tuple[str, object]] = []

    def started(sender: object, call: object, **kwargs: object) -> None:
        events.append(("started", sender))

    def finished(sender: object, call: object, duration: float, **kwargs: object) -> None:
        events.append(("finished", sender))

    def failed(sender: object, call: object, exception: Exception, **kwargs: object) -> None:
        events.append(("failed", type(exception)))

    signals.call_started.connect(started)
    signals.call_finished.connect(finished)
    signals.call_failed.connect(failed)
    try:
        after_response.defer(recorder.record, "ok")
        after_response.defer(recorder.fail, "not ok")
        assert after_response.drain(recorder.WAIT)
    finally:
        signals.call_started.disconnect(started)
        signals.call_finished.disconnect(finished)
        signals.call_failed.disconnect(failed)
    assert sorted(events, key=str) == sorted(
        [
            ("started", recorder.record),
            ("finished", recorder.record),
            ("started", recorder.fail),
            ("failed", ValueError),
        ],
        key=str,
    )


def test_the_handle_reports_state():
    call = after_response.defer(recorder.record, "x")
    assert after_response.drain(recorder.WAIT)
    assert call.state is State.DONE
    assert call.name == "tests.recorder.record"
    assert "DeferredCall tests.recorder.record done" in repr(call)


class TestBadInput:
    def test_not_callable(self):
        with pytest.raises(
            TypeError, match=r"after_response.defer\(\) needs a callable, got 'str'"
        ):
            after_response.defer("send_mail")  # type: ignore[arg-type]

    def test_coroutine_object(self):
        async def notify() -> None:
            pass

        with pytest.raises(
            TypeError, match=r"write defer\(fn, \*args\), not defer\(fn\(\*args\)\)"
        ):
            after_response.defer(notify())  # type: ignore[arg-type]

    def test_uploaded_file(self):
        upload = SimpleUploadedFile("books.csv", b"title\n")
        with pytest.raises(TypeError, match="Save it first"):
            after_response.defer(print, upload)
        with pytest.raises(TypeError, match="Save it first"):
            after_response.defer(print, file=upload)

    def test_the_request(self):
        request = RequestFactory().get("/")
        with pytest.raises(TypeError, match="Pass the values the call needs instead"):
            after_response.defer(print, request)


def test_a_task_object_is_accepted_and_enqueued():
    """Any backend's Task (here the framework's ImmediateBackend), after the response."""
    from .tasks_app.compat import AVAILABLE, FRAMEWORK

    if not AVAILABLE:
        pytest.skip("no Tasks framework: Django < 6 without the django-tasks backport")
    from django.test import override_settings

    from . import tasks as test_tasks

    backend = f"{FRAMEWORK}.backends.immediate.ImmediateBackend"
    with override_settings(TASKS={"default": {"BACKEND": backend}}):
        handle = after_response.defer(test_tasks.remember, "via task")
        assert after_response.drain(recorder.WAIT)
    assert handle.state is State.DONE
    assert recorder.names() == ["via task"]


@pytest.mark.django_db
def test_the_request_is_not_kept_alive_by_its_queue():
    import gc
    import weakref

    from django.core.handlers.wsgi import WSGIRequest

    requests: list[weakref.ref[WSGIRequest]] = []

    response = Client().get("/defer-two/")
    requests.append(weakref.ref(response.wsgi_request))
    queue = response.wsgi_request.on_response_sent
    assert recorder.wait_for(2) == ["first", "second"]
    assert queue.sent and len(queue) == 0 and list(queue) == []
    del response
    gc.collect()
    assert requests[0]() is None


def test_a_tasks_arguments_are_checked_at_the_call_site():
    from .tasks_app.compat import AVAILABLE

    if not AVAILABLE:
        pytest.skip("no Tasks framework: Django < 6 without the django-tasks backport")
    from . import tasks as test_tasks

    with pytest.raises(TypeError, match="the arguments of a Task must be JSON data"):
        after_response.defer(test_tasks.remember, object())
