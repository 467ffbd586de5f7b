"""Use case 1, bulk import: check the upload in the request, import its rows after the response.

The request checks only what it can at once (type, size, header, at least one row), saves the
upload with ``default_storage`` (Django closes the ``UploadedFile`` once the response is sent)
and defers ``run_import(job_id)``. Each row is saved in its own savepoint, so a row is saved
whole or not at all; rows are committed in small batches together with the job's counters, so
the progress the job page polls always matches the books saved.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
import zipfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from .models import Book, BookType, ImportJob, ImportRowError, normalize_isbn
from .publishing import schedule_publish

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = (
    "title",
    "author",
    "book_type",
    "isbn",
    "year_published",
    "price",
    "no_of_pages",
    "quantity",
)
OPTIONAL_COLUMNS = ("description",)
FORMATS = {".csv": "csv", ".xlsx": "xlsx"}
BATCH_ROWS = 10  # rows per transaction: the job page sees progress batch by batch
MAX_ERRORS_LISTED = 200  # row errors the status endpoint returns
BOOK_TYPES = {label.lower(): value for value, label in BookType.choices} | {
    value: value for value in BookType.values
}


class BadUpload(ValueError):
    """The upload cannot be imported; the message says why, for a 400 response."""


Row = dict[str, str]


# -- in the request -----------------------------------------------------------------------


def check_upload(upload: UploadedFile) -> str:
    """Check type, size, header and first row; return the format. Raises BadUpload."""
    name = upload.name or ""
    extension = os.path.splitext(name)[1].lower()
    if extension not in FORMATS:
        hint = " (save old .xls workbooks as .xlsx)" if extension == ".xls" else ""
        shown = f"'{extension}'" if extension else "without an extension"
        raise BadUpload(f"Unsupported file type {shown}: upload a .csv or .xlsx file{hint}.")
    limit = settings.DEMO_MAX_UPLOAD_BYTES
    if upload.size is None or upload.size == 0:
        raise BadUpload("The file is empty.")
    if upload.size > limit:  # Django has received it by now: the proxy in front caps the body
        raise BadUpload(f"The file is {_size(upload.size)}; the limit is {_size(limit)}.")
    file_format = FORMATS[extension]
    upload.seek(0)
    rows = read_rows(upload, file_format)
    try:
        next(rows, None)  # reads the header, and checks it
        if next(rows, None) is None:
            raise BadUpload("The file has a header but no rows.")
    finally:
        rows.close()
    upload.seek(0)
    return file_format


def _size(size: int) -> str:
    return filesizeformat(size).replace("\xa0", " ")


def start_import(upload: UploadedFile, file_format: str) -> ImportJob:
    """Save the (checked) upload and create its job; the caller defers ``run_import``."""
    stored_name = default_storage.save(f"imports/upload.{file_format}", upload)
    return ImportJob.objects.create(
        original_name=os.path.basename(upload.name or "")[:255],
        stored_name=stored_name,
        file_format=file_format,
    )


# -- reading both formats -----------------------------------------------------------------


def read_rows(file: IO[bytes], file_format: str) -> Iterator[tuple[int, Row] | None]:
    """Yield None for the header once checked, then (row number, values by column) per row.

    Raises BadUpload for a file that is not what it says, or a header that lacks a column.
    """
    records = _csv_records(file) if file_format == "csv" else _xlsx_records(file)
    try:
        first = next((cells for _, cells in records if any(c.strip() for c in cells)), None)
        if first is None:
            raise BadUpload("The file is empty.")
        header = _check_header(first)
        yield None
        for row_number, cells in records:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines are not rows
            if len(cells) > len(header) and any(c.strip() for c in cells[len(header) :]):
                yield row_number, {"": f"{len(cells)} cells, but the header has {len(header)}"}
                continue
            padded = cells[: len(header)] + [""] * (len(header) - len(cells))
            # Columns without a name are ignored (so are unknown ones, later).
            yield row_number, {k: v for k, v in zip(header, padded, strict=True) if k}
    finally:
        records.close()


def _check_header(cells: list[str]) -> list[str]:
    header = [cell.strip().lower().replace(" ", "_") for cell in cells]
    while header and not header[-1]:
        header.pop()
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise BadUpload(
            f"Missing column(s): {', '.join(missing)}. The first row must name the columns "
            f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)} (description is optional)."
        )
    duplicated = sorted({column for column in header if column and header.count(column) > 1})
    if duplicated:
        raise BadUpload(f"Duplicated column(s): {', '.join(duplicated)}.")
    return header


def _csv_records(file: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text)
        for cells in reader:
            if any("\x00" in cell for cell in cells):
                raise BadUpload("This is not a CSV text file (it contains binary data).")
            yield reader.line_num, cells
    except UnicodeDecodeError as error:
        raise BadUpload(
            f"This is not a UTF-8 CSV file (byte {error.start} cannot be decoded)."
        ) from error
    except csv.Error as error:
        raise BadUpload(f"This CSV file cannot be read: {error}.") from error
    finally:
        text.detach()  # the caller owns the file: do not close it with the wrapper


def _xlsx_records(file: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    try:
        import openpyxl
    except ImportError as error:  # openpyxl is in the "demo" extra
        raise BadUpload("This server cannot read .xlsx files: pip install openpyxl.") from error
    try:
        workbook = openpyxl.load_workbook(file, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as error:
        raise BadUpload("This is not a valid .xlsx workbook.") from error
    try:
        sheet = workbook.worksheets[0]
        for row_number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield row_number, [_cell_text(value) for value in values]
    finally:
        workbook.close()


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an ISBN or a year typed as a number
    return str(value)


# -- after the response -------------------------------------------------------------------


def run_import(job_id: int) -> None:
    """Import the rows of a job's file. Runs in after_response's worker thread."""
    job = ImportJob.objects.get(pk=job_id)
    _update(job_id, status=ImportJob.Status.RUNNING, started_at=timezone.now())
    try:
        with default_storage.open(job.stored_name, "rb") as file:
            rows = [row for row in read_rows(file, job.file_format) if row is not None]
        _update(job_id, total_rows=len(rows))
        for batch in _batches(rows, BATCH_ROWS):
            _import_batch(job, batch)
            time.sleep(settings.DEMO_IMPORT_ROW_DELAY * len(batch))  # outside the transaction
    except Exception as error:
        # The whole job failed (the file vanished, the database went away): say so on the
        # job page, and let after_response log the traceback and count the failure.
        _update(
            job_id, status=ImportJob.Status.FAILED, message=str(error), finished_at=timezone.now()
        )
        raise
    _update(job_id, status=ImportJob.Status.DONE, finished_at=timezone.now())
    default_storage.delete(job.stored_name)
    job.refresh_from_db()
    logger.info("Import #%d: %d imported, %d refused", job.pk, job.imported, job.failed)
    if job.imported:
        schedule_publish()


def _update(job_id: int, **fields: Any) -> None:
    # QuerySet.update() leaves auto_now fields alone: updated_at is what tells a stalled job.
    ImportJob.objects.filter(pk=job_id).update(updated_at=timezone.now(), **fields)


def _batches(rows: list[tuple[int, Row]], size: int) -> Iterable[list[tuple[int, Row]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _import_batch(job: ImportJob, batch: list[tuple[int, Row]]) -> None:
    imported = 0
    errors = []
    with transaction.atomic():
        for row_number, values in batch:
            try:
                with transaction.atomic():  # a savepoint: the row is saved whole, or not at all
                    _book(values).save()
            except ValidationError as error:
                errors.append(ImportRowError(job=job, row_number=row_number, reason=_why(error)))
            except IntegrityError:  # another import saved the same ISBN just now
                reason = "isbn: a book with this ISBN already exists."
                errors.append(ImportRowError(job=job, row_number=row_number, reason=reason))
            else:
                imported += 1
        ImportRowError.objects.bulk_create(errors)
        _update(
            job.pk,
            rows_done=F("rows_done") + len(batch),
            imported=F("imported") + imported,
            failed=F("failed") + len(errors),
        )


def _book(values: Row) -> Book:
    if "" in values:  # a row with more cells than the header
        raise ValidationError(values[""])
    book_type = values["book_type"].strip()
    book = Book(
        title=values["title"].strip(),
        author=values["author"].strip(),
        book_type=BOOK_TYPES.get(book_type.lower(), book_type),
        isbn=normalize_isbn(values["isbn"]),
        year_published=values["year_published"].strip() or None,
        price=values["price"].strip() or None,
        no_of_pages=values["no_of_pages"].strip() or None,
        quantity=values["quantity"].strip() or None,
        description=values.get("description", "").strip(),
    )
    book.full_clean()  # every field's validators, and the ISBN's uniqueness
    return book


def _why(error: ValidationError) -> str:
    if not hasattr(error, "error_dict"):
        return "; ".join(error.messages)
    return "; ".join(
        f"{field}: {message}"
        for field, messages in error.message_dict.items()
        for message in messages
    )
