"""6. The status page, fed by the library's signals; and the thank-you note of the index."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from after_response.testing import DeferredCallFailed
from django.test import Client

from demo import views
from demo.models import CallRecord, Note

from .conftest import FakeRemote
from .test_catalogue import make_book

pytestmark = pytest.mark.django_db

Capture = Callable[..., AbstractContextManager[list[Any]]]


def test_each_outcome_is_recorded(
    client: Client, fake_remote: FakeRemote, capture_deferred: Capture
) -> None:
    book = make_book()
    client.post(f"/books/{book.pk}/sell/", {"supplier": "ok"})
    with pytest.raises(DeferredCallFailed), capture_deferred(execute=True):
        client.post(f"/books/{book.pk}/sell/", {"supplier": "error"})

    records = list(CallRecord.objects.order_by("pk").values_list("name", "outcome"))
    assert records == [
        ("demo.remote.deliver_webhook", "done"),
        ("demo.publishing.publish_catalogue", "done"),
        ("demo.remote.deliver_webhook", "failed"),
        ("demo.publishing.publish_catalogue", "done"),
    ]
    failed = CallRecord.objects.get(outcome="failed")
    assert failed.error.startswith("RemoteError: Webhook stock.changed #2 failed")
    assert failed.pid == os.getpid()
    assert failed.thread == threading.current_thread().name  # immediate mode: this thread
    assert failed.duration >= 0


def test_status_page(client: Client, fake_remote: FakeRemote, capture_deferred: Capture) -> None:
    book = make_book()
    client.post(f"/books/{book.pk}/sell/", {"supplier": "ok"})
    with pytest.raises(DeferredCallFailed), capture_deferred(execute=True):
        client.post(f"/books/{book.pk}/sell/", {"supplier": "error"})

    page = client.get("/status/").content.decode()
    # What ran and what failed, from the database: every process's calls.
    assert "<code>demo.remote.deliver_webhook</code>" in page
    assert '<td class="num ok">1</td>\n        <td class="num failed">1</td>' in page
    assert "RemoteError: Webhook stock.changed #2 failed" in page
    assert f"(seen so far: {os.getpid()})" in page
    # The queue, from after_response.stats(): this process only, and said so.
    assert f"The queue of process {os.getpid()}, now" in page
    assert "counts this process only" in page
    assert '<td class="num" id="queue-depth">0</td>' in page
    assert '<th>mode</th><td class="num">immediate</td>' in page
    # The webhooks and what the fake service received.
    assert '<td class="failed">failed</td>' in page
    assert '<td>stock.changed</td><td class="num">503</td>' in page


def test_empty_status_page(client: Client) -> None:
    page = client.get("/status/").content.decode()
    assert "Nothing has run yet." in page
    assert "None yet: sell a copy of a book." in page


def test_a_failed_record_is_logged_not_raised(
    client: Client,
    fake_remote: FakeRemote,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The library sends the signals with send_robust(), which would swallow the error."""

    def broken(**kwargs: Any) -> CallRecord:
        raise RuntimeError("disk full")

    monkeypatch.setattr(CallRecord.objects, "create", broken)
    response = client.post(f"/books/{make_book().pk}/sell/", {"supplier": "ok"})
    assert response.status_code == 302
    messages = [r.getMessage() for r in caplog.records if r.name == "demo.status"]
    assert messages == [
        "Could not record the outcome of demo.remote.deliver_webhook",
        "Could not record the outcome of demo.publishing.publish_catalogue",
    ]


def test_old_records_are_pruned(client: Client) -> None:
    from demo import status

    CallRecord.objects.bulk_create(
        CallRecord(name="x", outcome="done", duration=0, pid=1, thread="t")
        for _ in range(status.PRUNE_EVERY - 1)
    )
    client.post("/books/")  # one call: publish_catalogue, the 100th record
    last = CallRecord.objects.latest("pk")
    assert last.pk % status.PRUNE_EVERY == 0
    assert not CallRecord.objects.filter(pk__lte=last.pk - status.KEEP_RECORDS).exists()


def test_thank_you_note(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(views, "SEND_SECONDS", 0)
    caplog.set_level(logging.INFO)
    response = client.post("/", {"recipient": "Grace"})
    assert response.status_code == 302
    note = Note.objects.get()
    assert note.sent_at is not None and note.started_at is not None
    assert note.pid == os.getpid()
    page = client.get("/").content.decode()
    assert "Grace" in page
    assert "after_response.stats()" in page
