"""Views and URLs of the servers tests/test_drain.py starts (tests.e2e.drain_settings).

Each ``insert/<name>/`` request defers one database insert that takes ``?seconds=``. When
``AFTER_RESPONSE_E2E_GATE`` names a file, every such call waits for that file to exist before it
works: the test creates it right after the stop signal, so that the drain at shutdown, not the
time the requests took, decides what runs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path

import after_response
from tests.models import Record

GATE = os.environ.get("AFTER_RESPONSE_E2E_GATE")
GATE_LIMIT = 60.0  # seconds a call waits for the gate before it gives up
POLL_INTERVAL = 0.005  # seconds


def insert(request: HttpRequest, name: str) -> HttpResponse:
    request.defer(gated_insert, name, float(request.GET["seconds"]))  # type: ignore[attr-defined]
    return HttpResponse(name)


def gated_insert(name: str, seconds: float) -> None:
    if GATE is not None:
        deadline = time.monotonic() + GATE_LIMIT
        while not Path(GATE).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the test never opened the gate {GATE}")
            time.sleep(POLL_INTERVAL)
    slow_insert(name, seconds)


def slow_insert(name: str, seconds: float) -> None:
    time.sleep(seconds)  # the slow part of the work (an API call, say); not a wait for anything
    Record.objects.create(name=name, value=str(os.getpid()))


def stats(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dataclasses.asdict(after_response.stats()))


urlpatterns = [
    path("", include("tests.e2e.urls")),
    path("insert/<str:name>/", insert),
    path("stats/", stats),
]
