"""The views the benchmarks request, in-process through ``WSGIHandler`` or under gunicorn."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

import after_response

from .models import Row

# The "I/O" of the served-latency views, in seconds (their smoke run makes it shorter).
IO_SECONDS = float(os.environ.get("BENCH_IO_SECONDS", "0.1"))

# How /defer/<side>/<count>/ defers one call, per side; filled in by the benchmark that
# requests it, so that every side runs the very same view around its own way of deferring.
SINKS: dict[str, Callable[[HttpRequest], object]] = {}


def noop() -> None:
    pass


def small_query(alias: str = "default") -> None:
    Row.objects.using(alias).filter(pk=1).exists()


def io_work() -> None:
    time.sleep(IO_SECONDS)


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok")


def defer(request: HttpRequest, side: str, count: int) -> HttpResponse:
    sink = SINKS[side]
    for _ in range(count):
        sink(request)
    return HttpResponse(b"ok")


def served_none(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok")


def served_deferred(request: HttpRequest) -> HttpResponse:
    request.defer(io_work)  # type: ignore[attr-defined]
    return HttpResponse(b"ok")


def served_inline(request: HttpRequest) -> HttpResponse:
    io_work()
    return HttpResponse(b"ok")


def stats(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dataclasses.asdict(after_response.stats()))
