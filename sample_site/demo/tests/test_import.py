"""1. Bulk import: checked and stored in the request, imported after the response."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from after_response.testing import DeferredCallFailed
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.forms.models import model_to_dict
from django.test import Client
from django.utils import timezone

from demo import importing
from demo.models import Book, ImportJob, isbn13
from demo.sample_data import workbook_bytes
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
    26: "isbn: Book with this ISBN already exists.",
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
    assert (job.total_rows, job.rows_done, job.imported, job.failed) == (30, 30, 22, 8)
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
    real_book = importing._book

    def book_with_a_first_write(values: importing.Row) -> Book:
        book = real_book(values)  # checked: the ISBN is free
        if book.isbn == contested:  # now it is not: the save will fail
            Book.objects.create(**{**model_to_dict(book, exclude=["id"]), "title": "Half"})
        return book

    monkeypatch.setattr(importing, "_book", book_with_a_first_write)
    client.post("/imports/", {"file": csv_file(HEADER + "".join(rows))})

    job = ImportJob.objects.get()
    assert (job.total_rows, job.rows_done, job.imported, job.failed) == (5, 5, 4, 1)
    error = job.row_errors.get()
    assert (error.row_number, error.reason) == (4, "isbn: a book with this ISBN already exists.")
    assert not Book.objects.filter(isbn=contested).exists()
    assert Book.objects.count() == 4


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
    assert "22 book(s) imported, 8 row(s) refused, out of 30." in page
    assert "Ensure this value is greater than or equal to 0." in page


def test_stalled_job_is_reported(client: Client) -> None:
    job = ImportJob.objects.create(original_name="x.csv", stored_name="x.csv", file_format="csv")
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.RUNNING, updated_at=timezone.now() - timezone.timedelta(minutes=5)
    )
    assert client.get(f"/imports/{job.pk}/status.json").json()["stalled"] is True
    assert b'<div id="stalled" class="box error">' in client.get(f"/imports/{job.pk}/").content


def test_two_imports_of_the_same_books(client: Client) -> None:
    client.post("/imports/", {"file": sample_csv()})
    client.post("/imports/", {"file": sample_csv()})
    first, second = ImportJob.objects.order_by("pk")
    assert (first.imported, second.imported, second.failed) == (22, 0, 30)
    assert Book.objects.count() == 22
