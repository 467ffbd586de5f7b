"""Views that enqueue tasks: for the test client (tests/test_tasks.py) and for gunicorn."""

from __future__ import annotations

import os

from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from tests import recorder

from . import tasks
from .compat import TaskResultDoesNotExist, TaskResultStatus


def in_order(request: HttpRequest) -> JsonResponse:
    first = tasks.remember.enqueue("first task")
    request.defer(recorder.record, "plain call")  # type: ignore[attr-defined]
    second = tasks.remember.enqueue("second task")
    recorder.record("view returns")
    return JsonResponse({"ids": [first.id, second.id], "status": first.status})


def environment(request: HttpRequest) -> HttpResponse:
    tasks.remember_environment.enqueue("environment")
    return HttpResponse("ok")


def in_atomic(request: HttpRequest, outcome: str) -> JsonResponse:
    with transaction.atomic():
        result = tasks.remember.enqueue(outcome)
        if outcome == "rollback":
            transaction.set_rollback(True)
    return JsonResponse({"id": result.id})


def cancel(request: HttpRequest) -> JsonResponse:
    result = tasks.remember.enqueue("cancelled")
    queue = request.on_response_sent  # type: ignore[attr-defined]
    assert queue.cancel(next(iter(queue)))
    return JsonResponse({"id": result.id})


def defer_task(request: HttpRequest, outcome: str) -> HttpResponse:
    """request.defer() with a Task: enqueued on its own backend once the response is sent."""
    with transaction.atomic():
        backend = request.GET.get("backend", "dummy")
        request.defer(tasks.remember.using(backend=backend), outcome)  # type: ignore[attr-defined]
        if outcome == "rollback":
            transaction.set_rollback(True)
    recorder.record("view returns")
    return HttpResponse("ok")


async def async_view(request: HttpRequest) -> JsonResponse:
    awaited = await tasks.remember_async.aenqueue("aenqueue")
    plain = tasks.remember.enqueue("enqueue from async view")
    recorder.record("view returns")
    return JsonResponse({"ids": [awaited.id, plain.id]})


# -- the end-to-end project ------------------------------------------------------------------


def ready(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"ready {os.getpid()}")


def checkout(request: HttpRequest, name: str) -> JsonResponse:
    """Enqueues in a transaction, as a view that also writes an order would."""
    with transaction.atomic():
        result = tasks.record_visit.enqueue(name)
        if request.GET.get("rollback"):
            transaction.set_rollback(True)
    return JsonResponse({"id": result.id, "backend": result.backend, "pid": os.getpid()})


def defer_checkout(request: HttpRequest, name: str) -> JsonResponse:
    """The Task is enqueued after the response: a database backend's INSERT is off the path."""
    request.defer(tasks.record_visit, name)  # type: ignore[attr-defined]
    return JsonResponse({"pid": os.getpid()})


def result(request: HttpRequest, result_id: str) -> JsonResponse:
    try:
        found = tasks.record_visit.get_result(result_id)
    except TaskResultDoesNotExist:
        raise Http404(result_id) from None
    return JsonResponse(
        {
            "status": found.status,
            "return_value": (
                found.return_value if found.status == TaskResultStatus.SUCCESSFUL else None
            ),
            "worker_ids": found.worker_ids,
            "pid": os.getpid(),
        }
    )
