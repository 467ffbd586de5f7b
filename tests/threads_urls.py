"""A view that starts work in threads, for the request-context test in test_threads.py."""

from __future__ import annotations

import concurrent.futures
import threading

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils import timezone

from after_response import threads

from . import recorder


def start_work(request: HttpRequest) -> HttpResponse:
    with timezone.override("Europe/Paris"):
        for kind, thread_class in (("ours", threads.Thread), ("stdlib", threading.Thread)):
            thread = thread_class(target=recorder.record_environment, args=(f"{kind} thread",))
            thread.start()
            thread.join(recorder.WAIT)
        pools = (
            ("ours", threads.ThreadPoolExecutor),
            ("stdlib", concurrent.futures.ThreadPoolExecutor),
        )
        for kind, pool_class in pools:
            with pool_class(1) as pool:
                pool.submit(recorder.record_environment, f"{kind} pool").result(recorder.WAIT)
    return HttpResponse("ok")


urlpatterns = [path("start-work/", start_work)]
