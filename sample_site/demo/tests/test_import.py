"""1. Bulk import: checked and stored in the request, imported after the response."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import pytest
from after_response.testing import DeferredCallFailed
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError
from django.forms.models import model_to_dict
from django.test import Client
from django.utils import timezone

from demo import importing
from demo.models import Book, ImportJob, isbn13
from demo.sample_data import bad_rows, generated_csv, workbook_bytes
from demo.views import SAMPLE_CSV

pytestmark = pytest.mark.django_db

Capture = Callable[..., AbstractContextManager[list[Any]]]

HEADER = "title,author,book_type,isbn,year_published,price,no_of_pages,quantity,description\n"
# The refused rows of demo/sample_data/books.csv, by row number (row 1 is the header).
SAMPLE_REFUSED = {
    7: "isbn: '9781234567890' is not a valid ISBN",
    12: "price: Ensure this value is greater than or equal to 0.",
    16: "book_type: 'Poetry' is not one of Sci-tech, Magazine, Comic, Classic, Horror.",
    17: "year_published: 2999 is in the future.",
    22: "title: This field cannot be blank.",
    26: "isbn: A book with this ISBN already exists, with another title, year_published,",
    30: "no_of_pages: Ensure this value is greater than or equal to 1.",
    31: "year_published: “nineteen-26” value must be an integer.",
}


def csv_file(text: str, name: str = "books.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def sample_csv() -> SimpleUploadedFile:
    return SimpleUploadedFile("books.csv", SAMPLE_CSV.read_bytes(), content_type="text/csv")


def good_row(n: int) -> str:
    return f"Book {n},Author {n},Comic,{isbn13(f'978000000{n:03d}')},1999,9.50,100,3,\n"


def assert_sample_imported(job: ImportJob) -> None:
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE
    assert (job.total_rows, job.rows_done, job.imported, job.skipped, job.failed) == (
        30,
        30,
        22,
        0,
        8,
    )
    assert job.message == ""
    assert Book.objects.count() == 22
    refused = {error.row_number: error.reason for error in job.row_errors.all()}
    assert refused.keys() == SAMPLE_REFUSED.keys()
    for row, reason in SAMPLE_REFUSED.items():
        assert refused[row].startswith(reason), (row, refused[row])
    assert not default_storage.exists(job.stored_name)  # removed once imported


def test_upload_answers_at_once_and_imports_after_the_response(
    client: Client, capture_deferred: Capture
) -> None:
    with capture_deferred(execute=True) as calls:
        response = client.post("/imports/", {"file": sample_csv()})

        # The response: the job exists, its file is stored, nothing is imported yet.
        job = ImportJob.objects.get()
        assert response.status_code == 302
        assert response["Location"] == f"/imports/{job.pk}/"
        assert job.status == ImportJob.Status.QUEUED
        assert (job.original_name, job.file_format) == ("books.csv", "csv")
        assert default_storage.exists(job.stored_name)
        assert Book.objects.count() == 0
        # The call gets the job's id, never the upload (closed once the response is sent).
        assert [(call.name, call.args) for call in calls] == [
            ("demo.importing.run_import", (job.pk,))
        ]

    assert_sample_imported(job)


def test_xlsx_upload(client: Client) -> None:
    pytest.importorskip("openpyxl")
    upload = SimpleUploadedFile("books.xlsx", workbook_bytes(SAMPLE_CSV))
    response = client.post("/imports/", {"file": upload})
    assert response.status_code == 302
    job = ImportJob.objects.get()
    assert job.file_format == "xlsx"
    assert_sample_imported(job)


def test_sample_xlsx_download(client: Client) -> None:
    pytest.importorskip("openpyxl")
    response = client.get("/imports/sample.xlsx")
    assert response.status_code == 200
    assert zipfile.is_zipfile(io.BytesIO(response.content))


def test_json_endpoint(client: Client) -> None:
    response = client.post("/api/imports/", {"file": sample_csv()})
    assert response.status_code == 202
    body = response.json()
    job = ImportJob.objects.get()
    assert body["job"] == job.pk
    assert body["status_url"] == f"http://testserver/imports/{job.pk}/status.json"
    assert body["page_url"] == f"http://testserver/imports/{job.pk}/"

    status = client.get(f"/imports/{job.pk}/status.json").json()
    assert status["finished"] is True
    assert status["status"] == "done"
    assert (status["total"], status["done"], status["imported"], status["failed"]) == (
        30,
        30,
        22,
        8,
    )
    assert status["percent"] == 100
    assert [error["row"] for error in status["errors"]] == sorted(SAMPLE_REFUSED)
    assert_sample_imported(job)


def test_json_endpoint_needs_a_file(client: Client) -> None:
    response = client.post("/api/imports/", {})
    assert response.status_code == 400
    assert "No file" in response.json()["error"]


BAD_UPLOADS = {
    "wrong type": (
        SimpleUploadedFile("books.pdf", b"%PDF-1.4"),
        "Unsupported file type '.pdf': upload a .csv or .xlsx file.",
    ),
    "old excel": (
        SimpleUploadedFile("books.xls", b"\xd0\xcf\x11\xe0"),
        "save old .xls workbooks as .xlsx",
    ),
    "empty": (csv_file(""), "The file is empty."),
    "blank": (csv_file("\n\n"), "The file is empty."),
    "header only": (csv_file(HEADER), "The file has a header but no rows."),
    "missing column": (
        csv_file("title,author,isbn\nDune,Frank Herbert,9780441013593\n"),
        "Missing column(s): book_type, year_published, price, no_of_pages, quantity.",
    ),
    "duplicated column": (
        csv_file(HEADER.replace("description", "price") + good_row(1)),
        "Duplicated column(s): price.",
    ),
    "binary csv": (csv_file("title\x00,author\n"), "not a CSV text file"),
    "latin-1 csv": (
        SimpleUploadedFile("books.csv", "title,auteur é\n".encode("latin-1")),
        "This is not a UTF-8 CSV file",
    ),
    "not a workbook": (csv_file(HEADER + good_row(1), "books.xlsx"), "not a valid .xlsx"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS)
def test_bad_upload_is_refused_at_once(client: Client, case: str) -> None:
    upload, reason = BAD_UPLOADS[case]
    if case == "not a workbook":
        pytest.importorskip("openpyxl")
    response = client.post("/api/imports/", {"file": upload})
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert not ImportJob.objects.exists()


def test_oversized_upload_is_refused(client: Client, settings: Any) -> None:
    settings.DEMO_MAX_UPLOAD_BYTES = 1000
    upload = csv_file(HEADER + "".join(good_row(n) for n in range(30)))
    response = client.post("/api/imports/", {"file": upload})
    assert response.status_code == 400
    assert response.json()["error"] == "The file is 1.7 KB; the limit is 1000 bytes."


def test_bad_upload_on_the_page(client: Client) -> None:
    response = client.post("/imports/", {"file": csv_file("title,author\nx,y\n")})
    assert response.status_code == 400
    assert b"Not imported:" in response.content
    assert b"Missing column(s): book_type" in response.content
    assert not ImportJob.objects.exists()


def test_header_is_forgiving_about_case_spaces_and_order(client: Client) -> None:
    header = "Quantity, ISBN ,Title,Author,Book Type,Year Published,Price,No of pages\n"
    row = f"2,{isbn13('978111111111')},Dune,Frank Herbert,sci-tech,1965,9.99,412\n"
    client.post("/imports/", {"file": csv_file(header + row + "\n")})
    book = Book.objects.get()
    assert (book.title, book.book_type, book.quantity, book.description) == (
        "Dune",
        "sci-tech",
        2,
        "",
    )


def test_unnamed_columns_are_ignored(client: Client) -> None:
    client.post("/imports/", {"file": csv_file(HEADER.replace(",", ",,", 1) + good_row(1))})
    job = ImportJob.objects.get()
    assert (job.imported, job.failed) == (0, 1)  # the row has no cell for it: misaligned
    client.post("/imports/", {"file": csv_file(",".join([",", HEADER]) + ",," + good_row(2))})
    assert ImportJob.objects.latest("pk").imported == 1


def test_row_with_extra_cells_is_refused(client: Client) -> None:
    client.post("/imports/", {"file": csv_file(HEADER + good_row(1).strip() + ",extra\n")})
    job = ImportJob.objects.get()
    assert job.failed == 1
    assert job.row_errors.get().reason == "10 cells, but the header has 9"


def test_a_row_is_saved_whole_or_not_at_all(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row whose second write fails leaves nothing of its first (its savepoint rolls back);
    the rows around it are saved and the job's counts add up."""
    rows = [good_row(n) for n in range(1, 6)]
    contested = isbn13("978000000003")
    real_save = Book.save

    def save_with_a_first_write(book: Book, *args: Any, **kwargs: Any) -> None:
        if book.isbn == contested:
            half = {**model_to_dict(book, exclude=["id"]), "isbn": isbn13("978999999999")}
            real_save(Book(**half))  # the row's first write...
            raise IntegrityError("UNIQUE constraint failed: demo_book.isbn")  # ... its second
        real_save(book, *args, **kwargs)

    monkeypatch.setattr(Book, "save", save_with_a_first_write)
    client.post("/imports/", {"file": csv_file(HEADER + "".join(rows))})

    job = ImportJob.objects.get()
    assert (job.total_rows, job.rows_done, job.imported, job.failed) == (5, 5, 4, 1)
    error = job.row_errors.get()
    assert (error.row_number, error.reason) == (
        4,
        "isbn: A book with this ISBN already exists (identical rows are skipped).",
    )
    assert not Book.objects.filter(isbn__in=[contested, isbn13("978999999999")]).exists()
    assert Book.objects.count() == 4


@pytest.mark.parametrize("title", ["Book 3", "Another title"])
def test_a_book_saved_by_another_import_meanwhile(
    client: Client, monkeypatch: pytest.MonkeyPatch, title: str
) -> None:
    """Between the batch's check and a row's save, another import saved its ISBN (possible on
    PostgreSQL; SQLite's write lock forbids it): the row is skipped if that book is identical,
    refused if not, and its savepoint keeps the batch going."""
    contested = isbn13("978000000003")
    real_in_bulk = Book.objects.in_bulk

    def check_then_another_import(*args: Any, **kwargs: Any) -> dict[Any, Book]:
        found = real_in_bulk(*args, **kwargs)
        Book.objects.create(
            **{"title": title, "author": "Author 3", "book_type": "comic", "isbn": contested},
            **{"year_published": 1999, "price": "9.50", "no_of_pages": 100, "quantity": 3},
        )
        return found

    monkeypatch.setattr(Book.objects, "in_bulk", check_then_another_import)
    client.post("/imports/", {"file": csv_file(HEADER + "".join(good_row(n) for n in (1, 3, 5)))})
    job = ImportJob.objects.get()
    identical = title == "Book 3"
    assert (job.imported, job.skipped, job.failed) == (2, int(identical), int(not identical))
    assert Book.objects.get(isbn=contested).title == title
    if not identical:
        assert job.row_errors.get().reason.startswith(
            "isbn: A book with this ISBN already exists, with another title"
        )


def test_job_that_cannot_read_its_file_fails_visibly(
    client: Client, capture_deferred: Capture
) -> None:
    with pytest.raises(DeferredCallFailed), capture_deferred(execute=True):
        client.post("/imports/", {"file": csv_file(HEADER + good_row(1))})
        default_storage.delete(ImportJob.objects.get().stored_name)  # gone before the call runs
    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.FAILED
    assert "No such file" in job.message
    page = client.get(f"/imports/{job.pk}/")
    assert b"The import failed:" in page.content


def test_job_page_renders_progress_and_polls_until_finished(
    client: Client, capture_deferred: Capture
) -> None:
    with capture_deferred(execute=True):
        response = client.post("/imports/", {"file": sample_csv()}, follow=True)
        # Before the import ran: the page starts polling the status endpoint.
        job = ImportJob.objects.get()
        assert response.status_code == 200
        page = response.content.decode()
        assert f'data-status-url="/imports/{job.pk}/status.json"' in page
        assert 'data-initial-status="queued"' in page
        assert '<div id="summary" class="box" hidden>' in page
        assert "setTimeout(poll" in page

    page = client.get(f"/imports/{job.pk}/").content.decode()
    assert 'data-initial-status="done"' in page
    assert '<div id="summary" class="box">' in page
    assert "22 book(s) imported, 0 skipped, 8 row(s) refused, out of 30." in page
    assert "Ensure this value is greater than or equal to 0." in page


def stall(job: ImportJob) -> None:
    """As if its process died a while ago: no progress since."""
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.RUNNING, updated_at=timezone.now() - timedelta(minutes=5)
    )


def test_stalled_job_is_reported(client: Client) -> None:
    """Issue 12: the page said it stalled, while its status line still read "Running"."""
    job = ImportJob.objects.create(original_name="x.csv", stored_name="x.csv", file_format="csv")
    ImportJob.objects.filter(pk=job.pk).update(total_rows=3000, rows_done=600)
    running = client.get(f"/imports/{job.pk}/status.json").json()
    assert (running["stalled"], running["label"]) == (False, "Queued")
    stall(job)
    status = client.get(f"/imports/{job.pk}/status.json").json()
    assert (status["stalled"], status["status"], status["label"]) == (True, "running", "Stalled")
    page = client.get(f"/imports/{job.pk}/").content.decode()
    assert '<span id="status">Stalled</span>:' in page
    assert "Running" not in page
    assert (
        f'<form id="stalled" class="box error" method="post" action="/imports/{job.pk}/resume/">'
        in page
    )
    assert '<td class="running">Stalled</td>' in client.get("/imports/").content.decode()


def test_two_imports_of_the_same_books(client: Client) -> None:
    client.post("/imports/", {"file": sample_csv()})
    client.post("/imports/", {"file": sample_csv()})
    first, second = ImportJob.objects.order_by("pk")
    # The second imports nothing, refuses the same rows, and skips the others: already in.
    assert (first.imported, second.imported, second.skipped, second.failed) == (22, 0, 22, 8)
    assert Book.objects.count() == 22


# -- a job whose process died (issue 12) ----------------------------------------------------

ROWS_WITH_TWO_BAD = [
    good_row(1),
    "Bad,,,,,,,,\n",
    *map(good_row, (3, 4, 5)),
    "Bad,,,,,,,,\n",
    good_row(7),
]


class Killed(BaseException):
    """The process dies: no exception handler of the import runs."""


def run_until_killed(job: ImportJob, batches: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the import until its process dies, after ``batches`` batches."""
    real_batch = importing._import_batch
    done = []

    def import_batch(job: ImportJob, batch: list[tuple[int, importing.Row]]) -> None:
        if len(done) == batches:
            raise Killed
        real_batch(job, batch)
        done.append(batch)

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(importing, "_import_batch", import_batch)
        importing.run_import(job.pk)
    stall(job)


def queued_job(client: Client, capture_deferred: Capture, rows: list[str]) -> ImportJob:
    with capture_deferred():  # not run: the test runs it
        client.post("/imports/", {"file": csv_file(HEADER + "".join(rows))})
    return ImportJob.objects.latest("pk")


def test_stalled_job_resumes_after_its_last_batch(
    client: Client, capture_deferred: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importing, "BATCH_ROWS", 3)
    job = queued_job(client, capture_deferred, ROWS_WITH_TWO_BAD)
    run_until_killed(job, 1, monkeypatch)
    job.refresh_from_db()
    assert (job.status, job.rows_done, job.imported, job.failed) == ("running", 3, 2, 1)

    with capture_deferred(execute=True) as calls:
        response = client.post(f"/imports/{job.pk}/resume/", follow=True)
        assert [call.name for call in calls] == ["demo.importing.run_import"]
    assert b"Import #1 resumes after row 4." in response.content  # row 1 is the header
    job.refresh_from_db()
    assert (job.status, job.attempt, job.total_rows, job.rows_done) == ("done", 1, 7, 7)
    assert (job.imported, job.skipped, job.failed) == (5, 0, 2)
    assert [error.row_number for error in job.row_errors.all()] == [3, 7]
    assert Book.objects.count() == 5
    assert not default_storage.exists(job.stored_name)


def test_only_a_stalled_job_resumes(client: Client, capture_deferred: Capture) -> None:
    job = queued_job(client, capture_deferred, [good_row(1)])
    with capture_deferred() as calls:
        response = client.post(f"/imports/{job.pk}/resume/", follow=True)
    assert b"has not stalled: it was not resumed." in response.content
    assert calls == []
    stall(job)
    with capture_deferred() as calls:
        client.post(f"/imports/{job.pk}/resume/")
        client.post(f"/imports/{job.pk}/resume/")  # a second click: claimed already
    assert [call.name for call in calls] == ["demo.importing.run_import"]
    assert client.get(f"/imports/{job.pk}/resume/").status_code == 405


def test_a_run_of_an_older_attempt_stops(
    client: Client,
    capture_deferred: Capture,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The old run was alive after all, and the job resumed meanwhile: the old run's batch
    is rolled back, and it stops without a word on the job."""
    job = queued_job(client, capture_deferred, [good_row(1), "Bad,,,,,,,,\n"])
    real_batch = importing._import_batch

    def resumed_meanwhile(job: ImportJob, batch: list[tuple[int, importing.Row]]) -> None:
        ImportJob.objects.filter(pk=job.pk).update(attempt=1)  # by another request
        real_batch(job, batch)

    monkeypatch.setattr(importing, "_import_batch", resumed_meanwhile)
    importing.run_import(job.pk)
    job.refresh_from_db()
    assert (job.status, job.rows_done, job.imported, job.failed) == ("running", 0, 0, 0)
    assert not Book.objects.exists() and not job.row_errors.exists()
    assert [r.getMessage() for r in caplog.records if r.name == "demo.importing"] == [
        "Import #1: resumed by another run; this one stops"
    ]


def test_the_same_file_again_after_a_stall(
    client: Client, capture_deferred: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: the file uploaded again skips, and counts, the rows already imported."""
    monkeypatch.setattr(importing, "BATCH_ROWS", 3)
    first = queued_job(client, capture_deferred, ROWS_WITH_TWO_BAD)
    run_until_killed(first, 2, monkeypatch)
    client.post("/imports/", {"file": csv_file(HEADER + "".join(ROWS_WITH_TWO_BAD))})
    again = ImportJob.objects.latest("pk")
    assert (again.status, again.rows_done) == ("done", 7)
    assert (again.imported, again.skipped, again.failed) == (1, 4, 2)
    assert Book.objects.count() == 5
    status = client.get(f"/imports/{again.pk}/status.json").json()
    assert (status["imported"], status["skipped"], status["failed"]) == (1, 4, 2)
    page = client.get(f"/imports/{again.pk}/").content.decode()
    assert "1 book(s) imported, 4 skipped, 2 row(s) refused, out of 7." in page


def test_a_changed_row_is_refused_not_skipped(client: Client) -> None:
    client.post("/imports/", {"file": csv_file(HEADER + good_row(1) + good_row(2))})
    changed = good_row(2).replace(",3,\n", ",4,\n")  # another quantity
    client.post("/imports/", {"file": csv_file(HEADER + good_row(1) + changed + changed)})
    job = ImportJob.objects.latest("pk")
    assert (job.imported, job.skipped, job.failed) == (0, 1, 2)
    assert [error.reason for error in job.row_errors.all()] == [
        "isbn: A book with this ISBN already exists, with another quantity "
        "(identical rows are skipped).",
    ] * 2


def test_a_row_twice_in_one_file_is_imported_once(client: Client) -> None:
    client.post("/imports/", {"file": csv_file(HEADER + good_row(1) * 2)})
    job = ImportJob.objects.get()
    assert (job.imported, job.skipped, job.failed) == (1, 1, 0)


# -- what the file looks like (issue 12) ----------------------------------------------------


def test_row_with_too_few_cells_gets_one_error(client: Client) -> None:
    client.post("/imports/", {"file": csv_file(HEADER + "Dune,Frank Herbert\n" + good_row(1))})
    job = ImportJob.objects.get()
    assert (job.imported, job.failed) == (1, 1)
    error = job.row_errors.get()
    assert (error.row_number, error.reason) == (2, "2 of 9 columns: the row stops early")


def test_row_may_leave_out_a_trailing_optional_column(client: Client) -> None:
    client.post("/imports/", {"file": csv_file(HEADER + good_row(1).rstrip(",\n") + "\n")})
    job = ImportJob.objects.get()
    assert (job.imported, job.failed) == (1, 0)


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolons_or_tabs_between_columns(client: Client, delimiter: str) -> None:
    """As spreadsheets in many languages save CSV: with a decimal comma, too."""
    rows = [good_row(1).replace(",", delimiter), good_row(2).replace(",", delimiter)]
    rows[1] = rows[1].replace("9.50", "9,50")
    response = client.post(
        "/api/imports/", {"file": csv_file(HEADER.replace(",", delimiter) + "".join(rows))}
    )
    assert response.status_code == 202
    job = ImportJob.objects.get()
    assert (job.imported, job.failed) == (2, 0)
    assert {str(book.price) for book in Book.objects.all()} == {"9.50"}


def test_missing_columns_mention_the_separators(client: Client) -> None:
    response = client.post("/api/imports/", {"file": csv_file("title|author|isbn\nx|y|z\n")})
    assert response.status_code == 400
    assert response.json()["error"].endswith("separated by commas, semicolons or tabs.")


# -- the job page ---------------------------------------------------------------------------


def test_refused_rows_are_shown_only_once_there_are_some(
    client: Client, capture_deferred: Capture
) -> None:
    """Issue 12: an empty "Refused rows" table was shown while the job ran."""
    job = queued_job(client, capture_deferred, [good_row(1)])
    assert '<section id="refused" hidden>' in client.get(f"/imports/{job.pk}/").content.decode()
    importing.run_import(job.pk)
    assert '<section id="refused" hidden>' in client.get(f"/imports/{job.pk}/").content.decode()

    client.post("/imports/", {"file": csv_file(HEADER + "Bad,,,,,,,,\n")})
    page = client.get(f"/imports/{ImportJob.objects.latest('pk').pk}/").content.decode()
    assert '<section id="refused">' in page
    assert '<td class="num">2</td><td>author: This field cannot be blank.' in page
    # The script shows it as soon as an error comes in.
    assert 'getElementById("refused").hidden = status.errors.length === 0' in page


def test_large_sample_is_imported_with_its_refused_rows(client: Client) -> None:
    response = client.get("/imports/sample-large.csv")
    assert response["Content-Disposition"] == 'attachment; filename="books-10000.csv"'
    content = response.content
    assert content.count(b"\n") == 10_001
    rows = 1000  # the first thousand rows: the same as in the large file
    text = generated_csv(rows)
    assert content.startswith(text.encode())
    client.post("/api/imports/", {"file": csv_file(text)})
    job = ImportJob.objects.get()
    refused = {error.row_number: error.reason for error in job.row_errors.all()}
    assert (job.total_rows, job.imported, job.failed) == (rows, rows - len(bad_rows(rows)), 10)
    assert refused.keys() == bad_rows(rows).keys()
    for row, reason in bad_rows(rows).items():
        assert refused[row].startswith(reason), (row, refused[row])
