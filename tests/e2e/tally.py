"""Views and URLs of the counters test in tests/test_faults.py (tally_settings.py).

Each request defers one small call; with ``?fail=1`` the call raises. A call that ends well
appends its name to ``done-<pid>.txt`` in the settings' ``TALLY_DIR``, where each worker process
also writes its stats as it exits (tally_apps.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

WORK_SECONDS = 0.02  # what each call works: long enough for a small backlog to fill up


def tally(request: HttpRequest, name: str) -> HttpResponse:
    request.defer(tallied, name, request.GET.get("fail") == "1")  # type: ignore[attr-defined]
    return HttpResponse(name)


def tallied(name: str, fail: bool) -> None:
    time.sleep(WORK_SECONDS)  # the work (an API call, say); not a wait for anything
    if fail:
        raise ValueError("failed on purpose")
    with (Path(settings.TALLY_DIR) / f"done-{os.getpid()}.txt").open("a") as done:
        done.write(f"{name}\n")


urlpatterns = [
    path("", include("tests.e2e.urls")),
    path("tally/<str:name>/", tally),
]
