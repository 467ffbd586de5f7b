"""The snapshot of the request's language and time zone, read in another thread."""

from __future__ import annotations

import concurrent.futures
import contextvars
import zoneinfo
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

import pytest
from django.utils import timezone, translation

from after_response import snapshot


def in_a_worker(fn: Callable[[], Any]) -> Any:
    with concurrent.futures.ThreadPoolExecutor(1) as worker:
        return worker.submit(fn).result()


def public_and_snapshot() -> tuple[tuple[str | None, tzinfo], snapshot.Snapshot]:
    return (translation.get_language(), timezone.get_current_timezone()), snapshot.take()


def read(taken: snapshot.Snapshot) -> tuple[str | None, tzinfo]:
    return snapshot.language(taken), snapshot.current_timezone(taken)


def test_the_fast_path_is_used_with_this_asgiref():
    # If a new asgiref changes how a Local stores its data, the self-test turns the snapshot
    # off and captures go through the public API (correct, slower): this test says so.
    assert snapshot.available


@pytest.mark.parametrize(
    "activate",
    [
        lambda: None,
        lambda: (translation.activate("fr"), timezone.activate(zoneinfo.ZoneInfo("Asia/Tokyo"))),
        lambda: (translation.activate("de"), timezone.deactivate()),
        lambda: translation.deactivate_all(),
    ],
    ids=["defaults", "activated", "language-only", "deactivate-all"],
)
def test_a_worker_reads_what_the_public_api_returned(activate: Callable[[], object]):
    def request() -> tuple[tuple[str | None, tzinfo], snapshot.Snapshot]:
        activate()
        return public_and_snapshot()

    expected, taken = contextvars.Context().run(request)
    assert in_a_worker(lambda: read(taken)) == expected


def test_a_later_activation_does_not_show_through():
    def request() -> tuple[tuple[str | None, tzinfo], snapshot.Snapshot]:
        translation.activate("fr")
        timezone.activate(zoneinfo.ZoneInfo("Asia/Tokyo"))
        captured = public_and_snapshot()
        # The next request on this thread (WSGI threads serve many): it must not leak back.
        translation.activate("de")
        timezone.activate(zoneinfo.ZoneInfo("America/Lima"))
        return captured

    expected, taken = contextvars.Context().run(request)
    assert expected == ("fr", zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert in_a_worker(lambda: read(taken)) == expected


def test_values_of_another_thread_are_not_the_snapshots():
    """asgiref >= 3.12 ignores Local data a thread did not set itself (an inherited context):
    a snapshot taken under such a context reads the defaults, as the public API does there."""

    def request() -> contextvars.Context:
        translation.activate("fr")
        return contextvars.copy_context()

    inherited = contextvars.Context().run(request)
    expected, taken = in_a_worker(lambda: inherited.run(public_and_snapshot))
    assert in_a_worker(lambda: read(taken)) == expected
