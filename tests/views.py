from __future__ import annotations

import asyncio
import io
import threading

from django.db import transaction
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

import after_response

from . import recorder
from .models import Record

view_may_finish = threading.Event()  # for tests that hold a view open
slow_view_seconds = 10.0  # the most slow_sync works before it returns anyway


def defer_two(request: HttpRequest) -> HttpResponse:
    request.defer(recorder.record, "first")  # type: ignore[attr-defined]
    after_response.defer(recorder.record, "second")  # deep in the call stack
    return HttpResponse("ok")


async def defer_async(request: HttpRequest) -> HttpResponse:
    request.defer(recorder.record, "async-view")  # type: ignore[attr-defined]

    async def coroutine_function(name: str) -> None:
        await asyncio.sleep(0)
        recorder.record(name)

    request.defer(coroutine_function, "coroutine")  # type: ignore[attr-defined]
    return HttpResponse("ok")


def streaming(request: HttpRequest) -> StreamingHttpResponse:
    request.defer(recorder.record, "after-stream")  # type: ignore[attr-defined]

    def body():  # type: ignore[no-untyped-def]
        for chunk in (b"a", b"b", b"c"):
            recorder.record("chunk")
            yield chunk

    return StreamingHttpResponse(body())


def file(request: HttpRequest) -> FileResponse:
    request.defer(recorder.record, "after-file")  # type: ignore[attr-defined]
    return FileResponse(io.BytesIO(b"x" * 100_000), filename="x.bin")


def cacheable(request: HttpRequest) -> HttpResponse:
    request.defer(recorder.record, "cacheable")  # type: ignore[attr-defined]
    response = HttpResponse(b"cached body " * 50)
    response["Cache-Control"] = "max-age=60"
    response["ETag"] = '"v1"'
    return response


def template(request: HttpRequest) -> TemplateResponse:
    request.defer(recorder.record, "template")  # type: ignore[attr-defined]
    response = TemplateResponse(request, "page.html", {"word": "hello"})
    response["Cache-Control"] = "max-age=60"
    return response


def environment(request: HttpRequest) -> HttpResponse:
    timezone.activate("Europe/Paris")
    request.defer(recorder.record_environment, "environment")  # type: ignore[attr-defined]
    return HttpResponse("ok")


def write(request: HttpRequest, name: str) -> HttpResponse:
    request.defer(Record.objects.create, name=name)  # type: ignore[attr-defined]
    return HttpResponse("ok")


def in_atomic(request: HttpRequest, outcome: str) -> HttpResponse:
    try:
        with transaction.atomic():
            Record.objects.create(name="row")
            request.defer(recorder.record, "committed")  # type: ignore[attr-defined]
            request.on_response_sent.add(  # type: ignore[attr-defined]
                recorder.record, ("always",), wait_for_commit=False
            )
            if outcome == "rollback":
                raise ValueError("roll back")
    except ValueError:
        pass
    request.defer(recorder.record, "outside")  # type: ignore[attr-defined]
    return HttpResponse(outcome)


def failing(request: HttpRequest) -> HttpResponse:
    request.defer(recorder.fail, "boom")  # type: ignore[attr-defined]
    request.defer(recorder.record, "after-boom")  # type: ignore[attr-defined]
    return HttpResponse("ok", status=500)


def cancel_one(request: HttpRequest) -> HttpResponse:
    request.defer(recorder.record, "kept-1")  # type: ignore[attr-defined]
    handle = request.defer(recorder.record, "cancelled")  # type: ignore[attr-defined]
    request.defer(recorder.record, "kept-2")  # type: ignore[attr-defined]
    assert len(request.on_response_sent) == 3  # type: ignore[attr-defined]
    assert handle.cancel()
    assert [c.args[0] for c in request.on_response_sent] == ["kept-1", "kept-2"]  # type: ignore[attr-defined]
    return HttpResponse("ok")


def slow_sync(request: HttpRequest) -> HttpResponse:
    request.defer(recorder.record, "before-wait")  # type: ignore[attr-defined]
    recorder.record("view-waiting")
    view_may_finish.wait(slow_view_seconds)
    request.defer(recorder.record, "after-wait")  # type: ignore[attr-defined]
    recorder.record("view-done")
    return HttpResponse("ok")


def atomic_request_view(request: HttpRequest, outcome: str) -> HttpResponse:
    """Runs under ATOMIC_REQUESTS (see test_transactions)."""
    Record.objects.create(name="atomic-request")
    request.defer(recorder.record, "atomic-request")  # type: ignore[attr-defined]
    request.on_response_sent.add(  # type: ignore[attr-defined]
        recorder.record, ("error-report",), wait_for_commit=False
    )
    if outcome == "raise":
        raise RuntimeError("the view failed")
    return HttpResponse("ok")


def nested(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        try:
            with transaction.atomic():
                request.defer(recorder.record, "inner-rolled-back")  # type: ignore[attr-defined]
                raise ValueError
        except ValueError:
            pass
        with transaction.atomic():
            request.defer(recorder.record, "inner-released")  # type: ignore[attr-defined]
        request.defer(recorder.record, "outer")  # type: ignore[attr-defined]
    return HttpResponse("ok")


def two_databases(request: HttpRequest, outcome: str) -> HttpResponse:
    try:
        with transaction.atomic(using="default"), transaction.atomic(using="other"):
            request.defer(recorder.record, "both")  # type: ignore[attr-defined]
            with transaction.atomic(using="other"):
                request.defer(recorder.record, "other-savepoint")  # type: ignore[attr-defined]
            if outcome == "rollback-other":
                transaction.set_rollback(True, using="other")
    except ValueError:
        pass
    request.defer(recorder.record, "after")  # type: ignore[attr-defined]
    return HttpResponse("ok")


def count_records(request: HttpRequest) -> HttpResponse:
    request.defer(lambda: recorder.record("count", Record.objects.count()))  # type: ignore[attr-defined]
    return HttpResponse("ok")


# -- bad input refused at the call site (tests/test_bad_input.py) -----------------------------


def defer_an_upload(request: HttpRequest, how: str) -> HttpResponse:
    """Defer the upload in field "f" the way ``how`` says; answer with the error, if any."""
    import functools
    from collections.abc import Callable
    from typing import Any

    from django import forms

    class UploadForm(forms.Form):
        f = forms.FileField()

        def __init__(self, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.request = request

        def save(self) -> None:
            recorder.record("saved", self.cleaned_data["f"].name)

    upload = request.FILES["f"]
    form = UploadForm(request.POST, request.FILES, request=request)
    assert form.is_valid(), form.errors
    defer = request.defer  # type: ignore[attr-defined]
    ways: dict[str, Callable[[], object]] = {
        "getlist": lambda: defer(recorder.record, "getlist", request.FILES.getlist("f")),
        "FILES": lambda: defer(recorder.record, "FILES", request.FILES),
        "dict": lambda: defer(recorder.record, "dict", {"f": upload}),
        "tuple keyword": lambda: defer(recorder.record, "tuple keyword", value=(1, upload)),
        "partial": lambda: defer(functools.partial(recorder.record, "partial", upload)),
        "partial keyword": lambda: defer(functools.partial(recorder.record, value=[upload])),
        "partial and args": lambda: defer(functools.partial(recorder.record, "p"), [upload]),
        "form method": lambda: defer(form.save),
        "upload method": lambda: defer(upload.chunks),
        "the name": lambda: defer(recorder.record, "the name", upload.name),
        "form without upload": lambda: defer(UploadForm(request=request).is_valid),
    }
    try:
        ways[how]()
    except TypeError as exc:
        return HttpResponse(str(exc), status=400)
    return HttpResponse("accepted")
