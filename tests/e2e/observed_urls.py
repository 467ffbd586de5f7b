"""Views of the observed end-to-end project (observed_settings.py)."""

from __future__ import annotations

import logging
import os
from typing import Any

import sentry_sdk
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path
from opentelemetry import trace

from tests.models import Record

log = logging.getLogger("tests.observed")


def get_guid() -> str | None:
    if not settings.GUID:
        return None
    from django_guid import get_guid

    return get_guid()  # type: ignore[no-any-return]


def ready(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


def _ids() -> dict[str, Any]:
    span = trace.get_current_span().get_span_context()
    return {
        "otel_trace": format(span.trace_id, "032x"),
        "otel_span": format(span.span_id, "016x"),
        "sentry_trace": sentry_sdk.get_current_scope().get_trace_context()["trace_id"],
        "guid": get_guid(),
    }


def fail(request: HttpRequest, name: str) -> JsonResponse:
    sentry_sdk.set_tag("shop", "north")
    sentry_sdk.set_user({"id": "42", "username": "alice"})
    request.defer(failing_call, name)  # type: ignore[attr-defined]
    return JsonResponse(_ids())


async def fail_async(request: HttpRequest, name: str) -> JsonResponse:
    sentry_sdk.set_tag("shop", "north")
    sentry_sdk.set_user({"id": "42", "username": "alice"})
    request.defer(failing_call, name)  # type: ignore[attr-defined]
    return JsonResponse(_ids())


def failing_call(name: str) -> None:
    log.warning("inside the call %s", name)
    raise RuntimeError(f"observed failure {name}")


def traced(request: HttpRequest, name: str) -> JsonResponse:
    request.defer(traced_call, name)  # type: ignore[attr-defined]
    return JsonResponse(_ids())


async def traced_async(request: HttpRequest, name: str) -> JsonResponse:
    request.defer(traced_call, name)  # type: ignore[attr-defined]
    return JsonResponse(_ids())


def traced_call(name: str) -> None:
    tracer = trace.get_tracer("tests.observed")
    for number in range(3):  # three ORM queries, each in a span of its own
        with tracer.start_as_current_span(f"query {number}"):
            Record.objects.filter(name=name).exists()
    Record.objects.create(name=name)


def flush(request: HttpRequest) -> JsonResponse:
    sentry_sdk.flush(timeout=10.0)
    return JsonResponse({"flushed": True})


def spans(request: HttpRequest) -> JsonResponse:
    found = []
    for span in settings.EXPORTER.get_finished_spans():
        found.append(
            {
                "name": span.name,
                "trace": format(span.context.trace_id, "032x"),
                "span": format(span.context.span_id, "016x"),
                "parent": format(span.parent.span_id, "016x") if span.parent else None,
                "attributes": dict(span.attributes or {}),
                "status": span.status.status_code.name,
                "events": [event.name for event in span.events],
                "start": span.start_time,
                "end": span.end_time,
            }
        )
    return JsonResponse(found, safe=False)


urlpatterns = [
    path("ready/", ready),
    path("observed/fail/<str:name>/", fail),
    path("observed/fail-async/<str:name>/", fail_async),
    path("observed/traced/<str:name>/", traced),
    path("observed/traced-async/<str:name>/", traced_async),
    path("observed/spans/", spans),
    path("observed/flush/", flush),
]
