"""The demo in sample_site/, served by gunicorn with its config (two worker processes), as
``bash sample_site/run`` does; observed over HTTP and through its SQLite file.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from .sample_site_server import Server, serve, wait_for

pytestmark = pytest.mark.servers

SEND_SECONDS = 2.0  # demo.views.SEND_SECONDS
SENT_TIMEOUT = 15.0  # seconds for the deferred call to finish
IMPORT_TIMEOUT = 30.0  # seconds for an import to finish
CONCURRENT_READERS = 8


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    # The fake remote service answers in 1 s: the concurrent readers below overlap the refresh.
    with serve(tmp_path, SAMPLE_SITE_IMPORT_ROW_DELAY="0", SAMPLE_SITE_REMOTE_LATENCY="1") as s:
        yield s


def _note(server: Server, recipient: str) -> dict[str, Any] | None:
    rows = server.rows("SELECT * FROM demo_note WHERE recipient = ?", recipient)
    return rows[0] if rows else None


def test_redirect_comes_before_the_deferred_call(server: Server) -> None:
    recipient = f"pytest {uuid.uuid4().hex[:8]}"
    with server.client() as client:
        form = client.get("/")
        assert form.status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token is not None, form.text

        started = time.monotonic()
        response = client.post("/", data={"csrfmiddlewaretoken": token[1], "recipient": recipient})
        answered_in = time.monotonic() - started
        assert response.status_code == 302, response.text
        assert response.headers["location"] == "/"
        assert answered_in < SEND_SECONDS
        # Saved by the view, not yet sent: the deferred call is still sleeping.
        pending = _note(server, recipient)
        assert pending is not None
        assert pending["sent_at"] is None

        note = wait_for(
            f"note to {recipient!r} sent",
            lambda: (n := _note(server, recipient)) and n["sent_at"] and n,
            SENT_TIMEOUT,
        )
        answered_at, started_at, sent_at = (
            datetime.fromisoformat(note[field])
            for field in ("answered_at", "started_at", "sent_at")
        )
        assert answered_at <= started_at
        assert (sent_at - started_at).total_seconds() >= SEND_SECONDS * 0.9
        assert note["thread"].startswith("after_response-")
        assert str(note["pid"]) in server.worker_pids()

        page = client.get("/")
        assert page.status_code == 200
        assert recipient in page.text
        assert "after_response.stats()" in page.text


def import_books(server: Server, client: httpx.Client, csv: str) -> dict[str, Any]:
    """Import through the JSON endpoint; return the finished job's status."""
    response = client.post("/api/imports/", files={"file": ("books.csv", csv, "text/csv")})
    assert response.status_code == 202, response.text
    status_url = response.json()["status_url"]
    return wait_for(
        "import finished",
        lambda: (status := client.get(status_url).json())["finished"] and status,
        IMPORT_TIMEOUT,
    )


HEADER = "title,author,book_type,isbn,year_published,price,no_of_pages,quantity\n"


def test_import_through_the_json_endpoint(server: Server) -> None:
    csv = HEADER + "Dune,Frank Herbert,Sci-tech,9780441013593,1965,9.99,412,3\n"
    csv += "Dune,Frank Herbert,Sci-tech,9780441013594,1965,9.99,412,3\n"  # bad check digit
    with server.client() as client:
        bad = client.post("/api/imports/", files={"file": ("books.txt", "x", "text/plain")})
        assert bad.status_code == 400
        assert bad.json() == {"error": "Unsupported file type '.txt': upload a .csv or .xlsx file."}

        status = import_books(server, client, csv)
    assert (status["status"], status["imported"], status["failed"]) == ("done", 1, 1)
    assert status["errors"][0]["row"] == 3
    # The upload was stored, then removed once imported; the catalogue was published.
    assert list((server.data / "uploads" / "imports").iterdir()) == []
    # The import defers the publishing once done: it may still be under way.
    catalogue = server.data / "public" / "catalogue.html"
    wait_for("the published catalogue", catalogue.exists, SENT_TIMEOUT)
    assert "Dune" in catalogue.read_text()


def test_stale_offer_is_refreshed_once_across_processes(server: Server) -> None:
    """Concurrent readers of a stale offer, spread over both gunicorn processes: the database
    lease lets exactly one of them defer the refresh."""
    with server.client() as client:
        import_books(server, client, HEADER + "Dune,F. H.,Sci-tech,9780441013593,1965,9.99,412,3\n")
    [book] = server.rows("SELECT id, isbn FROM demo_book")

    def read(_: int) -> str:
        with server.client() as client:
            response = client.get(f"/books/{book['id']}/")
            assert response.status_code == 200
            return response.text

    with ThreadPoolExecutor(CONCURRENT_READERS) as pool:
        pages = list(pool.map(read, range(CONCURRENT_READERS)))
    # Several readers got the stale copy at once (each answered without waiting)...
    assert sum("Being refreshed after this response" in page for page in pages) >= 2

    offer = wait_for(
        "offer refreshed",
        lambda: server.rows(
            "SELECT * FROM demo_supplieroffer WHERE isbn = ? AND refreshed_at IS NOT NULL",
            book["isbn"],
        ),
        SENT_TIMEOUT,
    )[0]
    # ... and exactly one of them refreshed it.
    assert offer["refreshes"] == 1
    assert offer["refreshing_since"] is None
    hits = server.rows("SELECT * FROM demo_fakeservicehit WHERE kind = 'offer'")
    assert [hit["key"] for hit in hits] == [book["isbn"]]
    # The status page's record is written by a call_finished receiver, after the call (and its
    # commit) returned: wait for it too.
    refreshes = wait_for(
        "the refresh's call record",
        lambda: server.rows(
            "SELECT * FROM demo_callrecord WHERE name = 'demo.remote.refresh_offer'"
        ),
        SENT_TIMEOUT,
    )
    assert [(r["outcome"], str(r["pid"]) in server.worker_pids()) for r in refreshes] == [
        ("done", True)
    ]

    with server.client() as client:
        page = client.get(f"/books/{book['id']}/").text
    assert f"Price {float(offer['price']):.2f}, {offer['in_stock']} in stock" in page
    assert "Being refreshed" not in page
