"""The demo in a real headless browser: Debian's chromium driven by Playwright, against the demo
served by gunicorn (two worker processes) on an ephemeral port.

Playwright drives the system's /usr/bin/chromium (``executable_path``): no browser is ever
downloaded (never ``playwright install``), and the browser's own background networking is off.
"""

from __future__ import annotations

import importlib.util
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .sample_site_server import Server, serve, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT = 30_000  # milliseconds, for each of Playwright's waits
MAIL_TIMEOUT = 30.0  # seconds, for a deferred call to be done
# The demo's generated sample: large enough for the page to show the import under way, with
# no delay but the database's. One row in 100 is refused, for one of five reasons in turn.
LARGE_ROWS = 5000  # the first rows of the sample's 10,000: seconds of import
LARGE_REFUSED = LARGE_ROWS // 100
IMPORT_TIMEOUT = 90_000  # milliseconds: a loaded 2-core machine imports a few hundred rows/s

pytestmark = [
    pytest.mark.servers,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="playwright is missing: pip install playwright (never `playwright install`)",
    ),
]

HEADER = "title,author,book_type,isbn,year_published,price,no_of_pages,quantity,description\n"


def isbn13(first_twelve: str) -> str:
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(first_twelve))
    return first_twelve + str((10 - total % 10) % 10)


def large_sample(server: Server) -> bytes:
    with server.client() as client:
        response = client.get("/imports/sample-large.csv")
    assert response.status_code == 200
    return b"".join(response.content.splitlines(keepends=True)[: LARGE_ROWS + 1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("sample_site"), SAMPLE_SITE_REMOTE_LATENCY="0.1") as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(TIMEOUT)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_import_page_follows_the_job_live(page: Page, server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # Every value the page shows for "rows done", from its first update on.
    page.add_init_script(
        """
        window.seen = [];
        document.addEventListener("DOMContentLoaded", () => {
          const done = document.getElementById("done");
          if (done) new MutationObserver(() => window.seen.push(done.textContent))
            .observe(done, {childList: true, characterData: true, subtree: true});
        });
        """
    )
    not_found: list[str] = []  # issue 12: /favicon.ico was one, on every page of a browser
    page.on("response", lambda response: response.status == 404 and not_found.append(response.url))
    page.goto("/imports/")
    page.set_input_files(
        "input[name=file]",
        files=[{"name": "books.csv", "mimeType": "text/csv", "buffer": large_sample(server)}],
    )
    page.get_by_role("button", name="Import").click()

    expect(page).to_have_url(re.compile(r"/imports/\d+/$"))
    job = page.locator("#job")
    # The response came before the import: the page was rendered unfinished...
    expect(job).to_have_attribute("data-initial-status", re.compile("^(queued|running)$"))
    page.evaluate("window.notReloaded = true")

    # ... and reaches the summary by itself.
    total, good = LARGE_ROWS, LARGE_ROWS - LARGE_REFUSED
    summary = page.locator("#summary")
    expect(summary).to_be_visible(timeout=IMPORT_TIMEOUT)
    expect(summary).to_have_text(
        f"Finished. {good} book(s) imported, 0 skipped, {LARGE_REFUSED} row(s) refused, "
        f"out of {total}."
    )
    expect(page.locator("#progress-text")).to_contain_text(f"{total} of {total} rows done")
    assert page.eval_on_selector("#progress", "progress => progress.value") == 100
    assert page.evaluate("window.notReloaded") is True  # updated in place, never reloaded
    seen = [int(value) for value in page.evaluate("window.seen")]
    assert seen == sorted(seen) and seen[-1] == total
    assert any(0 < value < total for value in seen), f"no progress shown in between: {seen}"

    expect(page.locator("#refused")).to_be_visible()
    rows = page.locator("#errors tr")
    expect(rows).to_have_count(LARGE_REFUSED)
    numbers = [int(n) for n in rows.locator("td:first-child").all_inner_texts()]
    assert numbers == list(range(100, LARGE_ROWS + 1, 100))
    expect(rows.nth(0)).to_contain_text("price: Ensure this value is greater than or equal to 0.")
    expect(rows.nth(1)).to_contain_text("'Poetry' is not one of Sci-tech")
    expect(rows.nth(3)).to_contain_text("3 of 9 columns: the row stops early")

    # Headless Chromium asks for no icon: fetch the one the page names, as a browser would.
    icon = "fetch(document.querySelector('link[rel=icon]').href).then(r => r.status + r.url)"
    assert page.evaluate(icon) == f"200{server.url}/favicon.ico"
    assert not_found == []

    screenshot = tmp_path / "job-page.png"
    page.screenshot(path=screenshot, full_page=True)
    assert _distinct_pixel_values(screenshot) > 16, "the screenshot of the job page is blank"

    # The catalogue was republished after the import (deferred by the import once done).
    catalogue = server.data / "public" / "catalogue.html"
    last = isbn13(f"9798{total + 1:08d}")  # the ISBN of the last row, row 1 being the header
    wait_for(
        "the catalogue published with the imported books",
        lambda: catalogue.exists() and last in catalogue.read_text(),
        MAIL_TIMEOUT,
    )
    page.goto("/catalogue.html")
    expect(page.locator("h1")).to_have_text("Our catalogue")
    expect(page.locator("tbody")).to_contain_text(last)


def test_bad_book_error_page_and_deferred_mail(page: Page, server: Server) -> None:
    from playwright.sync_api import expect

    page.goto("/books/")
    page.get_by_role("button", name="Add a book with impossible data").click()
    expect(page.locator("h1")).to_have_text("Sorry, we cannot show this book right now")
    expect(page.locator("#problem")).to_contain_text("Our content team has been told")
    book_id = re.search(r"/books/(\d+)/$", page.url)
    assert book_id is not None

    subject = f"Subject: [catalogue] Book #{book_id[1]} has impossible data"
    mail = wait_for(
        "the mail to the content team",
        lambda: [m for m in _mails(server) if subject in m],
        MAIL_TIMEOUT,
    )
    assert "To: content-team@example.com" in mail[0]
    assert "year_published: 2999 is in the future." in mail[0]


def test_failed_webhook_is_not_shown_and_the_status_page_says_so(
    page: Page, server: Server
) -> None:
    from playwright.sync_api import expect

    page.goto("/imports/")
    page.set_input_files(
        "input[name=file]",
        files=[{"name": "one.csv", "mimeType": "text/csv", "buffer": _one_book_csv()}],
    )
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#summary")).to_contain_text("1 book(s) imported")
    [book] = server.rows("SELECT id FROM demo_book WHERE title = 'Webhook test'")

    page.goto(f"/books/{book['id']}/")
    expect(page.locator("#offer")).to_contain_text("Being refreshed after this response")
    page.get_by_label("The supplier's webhook endpoint").select_option("error")
    page.get_by_role("button", name="Sell one copy").click()
    expect(page.locator(".messages")).to_have_text("Sold a copy of Webhook test; 4 left.")

    wait_for(
        "the failed webhook delivery",
        lambda: server.rows("SELECT * FROM demo_webhookdelivery WHERE status = 'failed'"),
        MAIL_TIMEOUT,
    )
    wait_for(
        "the failed call's record",
        lambda: server.rows("SELECT * FROM demo_callrecord WHERE outcome = 'failed'"),
        MAIL_TIMEOUT,
    )
    # The buyer's pages never mention it.
    page.goto(f"/books/{book['id']}/")
    expect(page.locator("#quantity")).to_have_text("4")
    expect(page.locator("body")).not_to_contain_text("Service Unavailable")
    expect(page.locator("body")).not_to_contain_text("RemoteError")

    page.goto("/status/")
    expect(page.locator("h1")).to_have_text("6. Status")
    expect(page.locator("#by-name")).to_contain_text("demo.remote.deliver_webhook")
    expect(page.locator("#failures")).to_contain_text("RemoteError: Webhook stock.changed")
    expect(page.locator("#stats")).to_contain_text("Queue depth")
    expect(page.locator("body")).to_contain_text("counts this process only")
    expect(page.locator("#deliveries")).to_contain_text("failed")
    expect(page.locator("#hits")).to_contain_text("503")


def _one_book_csv() -> bytes:
    return (
        HEADER + f"Webhook test,A. Author,Comic,{isbn13('979200000001')},2001,3,40,5,\n"
    ).encode()


def _mails(server: Server) -> list[str]:
    directory = server.data / "mail"
    if not directory.exists():
        return []
    return [path.read_text() for path in sorted(directory.iterdir())]


def _distinct_pixel_values(png: Path) -> int:
    """Distinct byte values in the PNG's decoded image data: a blank page has very few."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat = 8, b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            idat += data[position + 8 : position + 8 + length]
        position += length + 12
    return len(set(zlib.decompress(idat)))
