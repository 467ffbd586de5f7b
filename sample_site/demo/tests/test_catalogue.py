"""2. Error notification, 3. cached remote data, 4. webhook, 5. the published snapshot."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from after_response.testing import DeferredCallFailed
from django.core import mail
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from demo import fake_service, notify, publishing, remote, views
from demo.models import (
    BadBookReport,
    Book,
    FakeServiceHit,
    SupplierOffer,
    WebhookDelivery,
    isbn13,
)

from .conftest import FakeRemote

pytestmark = pytest.mark.django_db

Capture = Callable[..., AbstractContextManager[list[Any]]]


def make_book(n: int = 1, **fields: Any) -> Book:
    return Book.objects.create(**book_values(n, **fields))


def book_values(n: int, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "title": f"Book {n}",
        "author": "Ada",
        "book_type": "classic",
        "isbn": isbn13(f"978123456{n:03d}"),
        "year_published": 1900,
        "price": Decimal("9.99"),
        "no_of_pages": 100,
        "quantity": 2,
    }
    return values | fields


def bad_book() -> Book:
    return make_book(99, year_published=2999, no_of_pages=0)


# -- 2. error notification ------------------------------------------------------------------


def test_bad_book_gets_a_friendly_page_and_the_team_a_mail(client: Client) -> None:
    book = bad_book()
    response = client.get(f"/books/{book.pk}/")
    assert response.status_code == 500
    assert b"Sorry, we cannot show this book right now" in response.content
    assert b"2999" not in response.content  # the details are for the team, not the reader
    [message] = mail.outbox
    assert message.subject == f"[catalogue] Book #{book.pk} has impossible data"
    assert message.to == ["content-team@example.com"]
    assert "year_published: 2999 is in the future." in message.body
    assert "no_of_pages: Ensure this value is greater than or equal to 1." in message.body
    assert f"http://testserver/admin/demo/book/{book.pk}/change/" in message.body
    assert f"(GET /books/{book.pk}/)" in message.body


def test_the_mail_goes_after_the_response(client: Client, capture_deferred: Capture) -> None:
    book = bad_book()
    with capture_deferred(execute=True) as calls:
        assert client.get(f"/books/{book.pk}/").status_code == 500
        assert mail.outbox == []
        assert [call.name for call in calls] == ["demo.notify.mail_content_team"]
    assert len(mail.outbox) == 1


def test_the_team_hears_of_a_problem_once(client: Client, capture_deferred: Capture) -> None:
    """Issue 12: every view of a broken book sent another identical mail."""
    book = bad_book()
    for _ in range(3):
        with capture_deferred(execute=True) as calls:
            assert client.get(f"/books/{book.pk}/").status_code == 500
        assert len(calls) <= 1  # nothing is even deferred once it is reported
    assert len(mail.outbox) == 1
    report = BadBookReport.objects.get()
    assert report.problems.splitlines() == [
        "no_of_pages: Ensure this value is greater than or equal to 1.",
        "year_published: 2999 is in the future.",
    ]
    # Another problem is news.
    Book.objects.filter(pk=book.pk).update(price=Decimal("-1"))
    client.get(f"/books/{book.pk}/")
    assert len(mail.outbox) == 2
    assert "price: Ensure this value is greater than or equal to 0." in mail.outbox[1].body


def test_concurrent_readers_send_one_mail(client: Client, capture_deferred: Capture) -> None:
    """Both readers defer the mail before either sends it: the report's unique constraint
    lets one of them send it."""
    book = bad_book()
    with capture_deferred() as calls:
        client.get(f"/books/{book.pk}/")
        client.get(f"/books/{book.pk}/")
    assert [call.name for call in calls] == ["demo.notify.mail_content_team"] * 2
    for call in calls:
        call.fn(*call.args, **call.kwargs)
    assert len(mail.outbox) == 1


def test_a_mail_that_failed_is_sent_by_the_next_reader(
    client: Client, monkeypatch: pytest.MonkeyPatch, capture_deferred: Capture
) -> None:
    book = bad_book()

    def mail_server_down(**kwargs: Any) -> None:
        raise OSError("Connection refused")

    monkeypatch.setattr(notify, "send_mail", mail_server_down)
    with pytest.raises(DeferredCallFailed), capture_deferred(execute=True):
        client.get(f"/books/{book.pk}/")
    assert not BadBookReport.objects.exists()
    monkeypatch.undo()
    client.get(f"/books/{book.pk}/")
    assert len(mail.outbox) == 1


def test_a_fixed_book_that_breaks_again_is_reported_again(admin_client: Client) -> None:
    book = bad_book()
    admin_client.get(f"/books/{book.pk}/")
    fixed = {"title": "Fixed", "author": "Ada", "book_type": "classic", "isbn": book.isbn}
    fixed |= {"year_published": 1900, "price": "9.99", "no_of_pages": 100, "quantity": 2}
    admin_client.post(f"/admin/demo/book/{book.pk}/change/", {**fixed, "description": ""})
    assert not BadBookReport.objects.exists()
    Book.objects.filter(pk=book.pk).update(year_published=2999, no_of_pages=0)
    admin_client.get(f"/books/{book.pk}/")
    assert len(mail.outbox) == 2


def test_good_book_sends_no_mail(client: Client, fake_remote: FakeRemote) -> None:
    assert client.get(f"/books/{make_book().pk}/").status_code == 200
    assert mail.outbox == []


def test_rolled_back_sale_still_reports(client: Client, fake_remote: FakeRemote) -> None:
    """The sale is rolled back, and the mail deferred inside it goes all the same
    (wait_for_commit=False); the webhook deferred in the same transaction does not."""
    book = bad_book()
    response = client.post(f"/books/{book.pk}/sell/", {"supplier": "ok"})
    assert response.status_code == 500
    assert b"Sorry, we cannot show this book right now" in response.content
    book.refresh_from_db()
    assert book.quantity == 2  # rolled back
    assert not WebhookDelivery.objects.exists()
    assert fake_remote.requests == []
    [message] = mail.outbox
    assert f"(POST /books/{book.pk}/sell/)" in message.body


def test_legacy_button_makes_a_bad_book(client: Client) -> None:
    response = client.post("/books/")
    book = Book.objects.get()
    assert response["Location"] == f"/books/{book.pk}/"
    assert book.problems() == [
        "year_published: 2999 is in the future.",
        "price: Ensure this value is greater than or equal to 0.",
        "no_of_pages: Ensure this value is greater than or equal to 1.",
    ]


# -- the catalogue's pages -----------------------------------------------------------------


def test_catalogue_is_paginated(client: Client) -> None:
    """Issue 12: /books/ put some 3,550 books on one 944 KB page."""
    Book.objects.bulk_create(Book(**book_values(n)) for n in range(250))
    first = client.get("/books/").content.decode()
    assert first.count('<td><a href="/books/') == views.BOOKS_PER_PAGE == 100
    assert "250 books, page 1 of 3:" in first
    assert '<a href="?page=2" rel="next">Next</a> <a href="?page=3">Last</a>' in first
    assert len(first) < 40_000
    last = client.get("/books/?page=3").content.decode()
    assert last.count('<td><a href="/books/') == 50
    assert '<a href="?page=2" rel="prev">Previous</a>' in last and "Next" not in last
    # Any other page number shows a page, not an error.
    assert "page 3 of 3" in client.get("/books/?page=99").content.decode()
    assert "page 1 of 3" in client.get("/books/?page=x").content.decode()


def test_favicon(client: Client) -> None:
    """Issue 12: /favicon.ico answered 404 on every page."""
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert b"".join(response.streaming_content).startswith(b"\x00\x00\x01\x00")  # ICO
    assert b'<link rel="icon" href="/favicon.ico">' in client.get("/books/").content


# -- 3. cached remote data ------------------------------------------------------------------


def test_first_read_answers_at_once_and_fetches_after(
    client: Client, fake_remote: FakeRemote, capture_deferred: Capture
) -> None:
    book = make_book()
    with capture_deferred(execute=True) as calls:
        response = client.get(f"/books/{book.pk}/")
        assert b"Not fetched yet." in response.content
        assert b"Being refreshed after this response" in response.content
        assert [call.name for call in calls] == ["demo.remote.refresh_offer"]
        assert fake_remote.requests == []
    assert fake_remote.paths() == [f"/fake-remote/offers/{book.isbn}.json"]
    offer = SupplierOffer.objects.get(isbn=book.isbn)
    assert offer.price is not None and offer.refreshed_at is not None
    assert (offer.refreshing_since, offer.refreshes, offer.last_error) == (None, 1, "")

    # The next reader sees the fresh copy, and refreshes nothing.
    with capture_deferred() as calls:
        response = client.get(f"/books/{book.pk}/")
    assert f"Price {offer.price}, {offer.in_stock} in stock".encode() in response.content
    assert b"Being refreshed" not in response.content
    assert calls == []


def test_stale_copy_is_served_then_refreshed(
    client: Client, fake_remote: FakeRemote, capture_deferred: Capture
) -> None:
    book = make_book()
    long_ago = timezone.now() - timedelta(hours=1)
    SupplierOffer.objects.create(
        isbn=book.isbn, price=Decimal("1.23"), in_stock=7, refreshed_at=long_ago
    )
    with capture_deferred(execute=True):
        response = client.get(f"/books/{book.pk}/")
        assert b"Price 1.23, 7 in stock" in response.content
        assert b"Being refreshed after this response" in response.content
    offer = SupplierOffer.objects.get()
    assert offer.refreshed_at is not None and offer.refreshed_at > long_ago
    assert offer.price != Decimal("1.23")


def test_concurrent_readers_refresh_once(client: Client, capture_deferred: Capture) -> None:
    """The lease is taken in the database: a second reader, in this process or another,
    finds it taken while the first refresh is under way."""
    book = make_book()
    with capture_deferred() as calls:
        for _ in range(3):
            assert client.get(f"/books/{book.pk}/").status_code == 200
    assert [call.name for call in calls] == ["demo.remote.refresh_offer"]


def test_claim_refresh() -> None:
    offer = SupplierOffer.objects.create(isbn="9780000000002")
    first = remote.claim_refresh(offer.pk)
    assert first is not None
    assert remote.claim_refresh(offer.pk) is None  # taken
    # A refresh that died with its process: its lease runs out and another reader retries.
    expired = timezone.now() - timedelta(seconds=31)
    SupplierOffer.objects.filter(pk=offer.pk).update(refreshing_since=expired)
    assert remote.claim_refresh(offer.pk) is not None
    # Fresh: nothing to claim, lease or not.
    SupplierOffer.objects.filter(pk=offer.pk).update(
        refreshing_since=None, refreshed_at=timezone.now()
    )
    assert remote.claim_refresh(offer.pk) is None


def test_failed_refresh_keeps_the_copy_and_the_lease(
    client: Client, fake_remote: FakeRemote, capture_deferred: Capture
) -> None:
    book = make_book()
    long_ago = timezone.now() - timedelta(hours=1)
    SupplierOffer.objects.create(
        isbn=book.isbn, price=Decimal("1.23"), in_stock=7, refreshed_at=long_ago
    )
    fake_remote.offer_status = 503
    failed = pytest.raises(DeferredCallFailed, match="Could not refresh the offer")
    with failed, capture_deferred(execute=True):
        client.get(f"/books/{book.pk}/")
    offer = SupplierOffer.objects.get()
    assert (offer.price, offer.refreshed_at) == (Decimal("1.23"), long_ago)
    assert offer.last_error.startswith("HTTPStatusError: Server error '503 Service Unavailable'")
    assert offer.refreshing_since is not None  # held until it expires: no retry per reader
    with capture_deferred() as calls:
        assert b"Price 1.23" in client.get(f"/books/{book.pk}/").content
    assert calls == []


def test_refresh_that_lost_its_lease_stores_nothing(fake_remote: FakeRemote) -> None:
    offer = SupplierOffer.objects.create(isbn="9780000000002")
    claimed_at = remote.claim_refresh(offer.pk)
    assert claimed_at is not None
    SupplierOffer.objects.filter(pk=offer.pk).update(refreshing_since=timezone.now())
    remote.refresh_offer(offer.pk, claimed_at, "http://remote.example/fake-remote/")
    offer.refresh_from_db()
    assert (offer.refreshed_at, offer.price) == (None, None)


def test_remote_calls_have_a_timeout(settings: Any) -> None:
    with remote.make_client() as client:
        assert client.timeout == httpx.Timeout(settings.DEMO_REMOTE_TIMEOUT)


def test_remote_url_setting(client: Client, settings: Any, capture_deferred: Capture) -> None:
    settings.DEMO_REMOTE_URL = "http://supplier.example/api/"
    book = make_book()
    with capture_deferred() as calls:
        client.get(f"/books/{book.pk}/")
    assert calls[0].args[2] == "http://supplier.example/api/"


# -- 4. webhook after the response ----------------------------------------------------------


def test_sale_calls_the_webhook_after_the_commit(
    client: Client, fake_remote: FakeRemote, capture_deferred: Capture
) -> None:
    book = make_book()
    with capture_deferred(execute=True) as calls:
        response = client.post(f"/books/{book.pk}/sell/", {"supplier": "ok"}, follow=True)
        assert b"Sold a copy of Book 1; 1 left." in response.content
        delivery = WebhookDelivery.objects.get()
        assert delivery.status == WebhookDelivery.Status.PENDING
        assert [call.name for call in calls] == [
            "demo.remote.deliver_webhook",
            "demo.publishing.publish_catalogue",
            "demo.remote.refresh_offer",  # the redirect's page read the offer
        ]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_status) == ("delivered", 204)
    assert delivery.payload == {"isbn": book.isbn, "quantity": 1}
    hit = FakeServiceHit.objects.get(kind="webhook")
    assert (hit.key, hit.status) == ("stock.changed", 204)


@pytest.mark.parametrize(
    ("behaviour", "status", "error"),
    [
        ("error", 503, "HTTPStatusError: Server error '503 Service Unavailable'"),
        ("slow", None, "ReadTimeout: timed out"),
    ],
)
def test_webhook_failure_is_logged_not_shown(
    client: Client,
    fake_remote: FakeRemote,
    capture_deferred: Capture,
    caplog: pytest.LogCaptureFixture,
    behaviour: str,
    status: int | None,
    error: str,
) -> None:
    book = make_book()
    failed = pytest.raises(DeferredCallFailed, match=r"Webhook stock\.changed")
    with failed, capture_deferred(execute=True):
        response = client.post(f"/books/{book.pk}/sell/", {"supplier": behaviour})
    assert response.status_code == 302  # the buyer was answered before the webhook ran
    book.refresh_from_db()
    assert book.quantity == 1  # the sale stands
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.response_status) == ("failed", status)
    assert delivery.error.startswith(error)
    [record] = [r for r in caplog.records if r.name == "after_response"]
    assert record.getMessage() == (
        "Deferred call demo.remote.deliver_webhook failed (request: POST books/<int:pk>/sell/)"
    )
    assert client.get(response["Location"]).status_code == 200


def test_sold_out_calls_no_webhook(client: Client, fake_remote: FakeRemote) -> None:
    book = make_book(quantity=0)
    response = client.post(f"/books/{book.pk}/sell/", {"supplier": "ok"}, follow=True)
    assert b"Book 1 is sold out." in response.content
    assert not WebhookDelivery.objects.exists()


def test_unknown_behaviour_is_refused(client: Client) -> None:
    assert client.post(f"/books/{make_book().pk}/sell/", {"supplier": "?"}).status_code == 400


def test_fake_service_over_http(client: Client) -> None:
    """The fake service's own views, as the real server's deferred calls reach them."""
    offer = client.get("/fake-remote/offers/9780000000002.json").json()
    assert offer["isbn"] == "9780000000002"
    assert Decimal(offer["price"]) > 0
    assert (
        client.post(
            "/fake-remote/webhooks/stock/?behaviour=error", {"event": "x"}, "application/json"
        ).status_code
        == 503
    )
    assert client.post("/fake-remote/webhooks/stock/", "nonsense", "text/plain").status_code == 400
    assert list(FakeServiceHit.objects.values_list("kind", "status")) == [
        ("webhook", 503),
        ("offer", 200),
    ]


def test_a_late_answer_is_explained(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: the fake service's log showed 204 for a webhook failed with ReadTimeout.

    It answers after the caller's timeout, and records what it answered: it says so."""
    settings.DEMO_REMOTE_TIMEOUT = 0.01
    monkeypatch.setattr(fake_service, "LATE_BY", 0.02)
    response = client.post(
        "/fake-remote/webhooks/stock/?behaviour=slow", {"event": "x"}, "application/json"
    )
    assert response.status_code == 204  # what nobody read
    hit = FakeServiceHit.objects.get()
    assert hit.status == 204
    assert hit.note.startswith("Answered after ")
    assert "s, past the caller's 0.01 s timeout:" in hit.note
    assert hit.note.endswith("the caller had given up (ReadTimeout) and never saw this answer.")
    page = client.get("/status/").content.decode()
    assert f'<td class="num">204</td><td>{escape(hit.note)}</td>' in page
    client.post("/fake-remote/webhooks/stock/", {"event": "x"}, "application/json")
    assert FakeServiceHit.objects.filter(note="").count() == 1  # in time: nothing to explain


# -- 5. the published snapshot --------------------------------------------------------------


def test_sale_republishes_the_catalogue(client: Client, fake_remote: FakeRemote) -> None:
    assert client.get("/catalogue.html").status_code == 404
    book = make_book()
    client.post(f"/books/{book.pk}/sell/", {"supplier": "ok"})
    response = client.get("/catalogue.html")
    assert response.status_code == 200
    assert b"1 book, published" in response.content
    assert b"Book 1" in response.content
    assert b'<td class="num">1</td></tr>' in response.content  # the quantity after the sale
    assert b"last published" in client.get("/books/").content


def test_one_publish_per_request(admin_client: Client, capture_deferred: Capture) -> None:
    books = [make_book(n) for n in range(3)]
    with capture_deferred(execute=True) as calls:
        admin_client.post(
            "/admin/demo/book/",
            {
                "action": "delete_selected",
                "_selected_action": [book.pk for book in books[:2]],
                "post": "yes",
            },
        )
    assert [call.name for call in calls] == ["demo.publishing.publish_catalogue"]
    snapshot = publishing.snapshot_path().read_text()
    assert "1 book, published" in snapshot
    assert "Book 2" in snapshot


def test_admin_edit_republishes(admin_client: Client) -> None:
    book = make_book()
    admin_client.post(
        f"/admin/demo/book/{book.pk}/change/",
        {
            "title": "Renamed",
            "author": "Ada",
            "book_type": "classic",
            "isbn": book.isbn,
            "year_published": 1900,
            "price": "9.99",
            "no_of_pages": 100,
            "quantity": 2,
            "description": "",
        },
    )
    assert "Renamed" in publishing.snapshot_path().read_text()


def test_snapshot_is_replaced_atomically(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    make_book()
    publishing.publish_catalogue()
    path = publishing.snapshot_path()
    before = path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    make_book(2)

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        publishing.publish_catalogue()
    assert path.read_text() == before  # the old snapshot, whole
    assert sorted(p.name for p in Path(path.parent).iterdir()) == [
        "catalogue.html",
        "catalogue.html.lock",
    ]  # no temporary file left behind


def test_logging_is_quiet_for_good_pages(
    client: Client, fake_remote: FakeRemote, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    client.get(f"/books/{make_book().pk}/")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
