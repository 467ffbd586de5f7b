"""Views for tests/test_paths.py: the ways a request can end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import get_script_prefix, path, reverse

from . import recorder


def stream_then_fail(request: HttpRequest) -> StreamingHttpResponse:
    request.defer(recorder.record, "after-broken-stream")  # type: ignore[attr-defined]

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first chunk"
        raise ValueError("the stream broke on purpose")

    return StreamingHttpResponse(chunks())


def stream_then_fail_sync(request: HttpRequest) -> StreamingHttpResponse:
    request.defer(recorder.record, "after-broken-stream")  # type: ignore[attr-defined]

    def chunks() -> Iterator[bytes]:
        yield b"first chunk"
        raise ValueError("the stream broke on purpose")

    return StreamingHttpResponse(chunks())


def raise_after_deferring(request: HttpRequest) -> HttpResponse:
    request.on_response_sent.add(  # type: ignore[attr-defined]
        recorder.record, args=("error-report",), wait_for_commit=False
    )
    raise ValueError("the view failed on purpose")


def defer_once(request: HttpRequest) -> HttpResponse:
    request.defer(recorder.record, "pass")  # type: ignore[attr-defined]
    status = 503 if not getattr(request, "retried", False) else 200
    return HttpResponse(status=status)


def defer_many(request: HttpRequest) -> HttpResponse:
    for i in range(int(request.GET["n"])):
        request.defer(recorder.record, f"call-{i}")  # type: ignore[attr-defined]
    return HttpResponse()


def record_prefix(request: HttpRequest) -> HttpResponse:
    in_view = (get_script_prefix(), reverse("record-prefix"))
    request.defer(  # type: ignore[attr-defined]
        lambda: recorder.record(
            "prefix", (in_view, (get_script_prefix(), reverse("record-prefix")))
        )
    )
    return HttpResponse()


urlpatterns = [
    path("stream-then-fail/", stream_then_fail),
    path("stream-then-fail-sync/", stream_then_fail_sync),
    path("raise/", raise_after_deferring),
    path("once/", defer_once),
    path("many/", defer_many),
    path("prefix/", record_prefix, name="record-prefix"),
]


class RetryOn503Middleware:
    """Above ours: calls get_response a second time when the first answer is a 503."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 503:
            request.retried = True  # type: ignore[attr-defined]
            response = self.get_response(request)
        return response


BASE_EXCEPTIONS: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
    "CancelledError": asyncio.CancelledError,
}


def raise_base(name: str) -> None:
    raise BASE_EXCEPTIONS[name]()


def defer_base_exception(request: HttpRequest, name: str) -> HttpResponse:
    request.defer(raise_base, name)  # type: ignore[attr-defined]
    return HttpResponse()


urlpatterns += [path("base-exception/<str:name>/", defer_base_exception)]
