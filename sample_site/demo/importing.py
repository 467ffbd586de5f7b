"""Use case 1, bulk import: check the upload in the request, import its rows after the response.

The request checks only what it can at once (type, size, header, at least one row), saves the
upload with ``default_storage`` (Django closes the ``UploadedFile`` once the response is sent)
and defers ``run_import(job_id)``, which imports as fast as the database allows. Rows are
checked outside any transaction, then committed in batches together with the job's counters,
so the progress the job page polls always matches the books saved. In a batch, one query finds
the ISBNs already there (a row identical to its book is skipped: a file imported twice, or
resumed, imports each book once), and each new row is saved in its own savepoint, so a row is
saved whole or not at all and a failed row is reported by its number.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import os
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

from .models import IMPORTED_FIELDS, Book, BookType, ImportJob, ImportRowError, normalize_isbn
from .publishing import schedule_publish

logger = logging.getLogger(__name__)

OPTIONAL_COLUMNS = ("description",)
REQUIRED_COLUMNS = tuple(name for name in IMPORTED_FIELDS if name not in OPTIONAL_COLUMNS)
FORMATS = {".csv": "csv", ".xlsx": "xlsx"}
DELIMITERS = (",", ";", "\t")  # of a CSV file: the header's most frequent one
BATCH_ROWS = 200  # rows per transaction: the job page sees progress batch by batch
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
    A row with the wrong number of cells gets one error (under the key ""), not one per field.
    """
    records = _csv_records(file) if file_format == "csv" else _xlsx_records(file)
    try:
        first = next((cells for _, cells in records if any(c.strip() for c in cells)), None)
        if first is None:
            raise BadUpload("The file is empty.")
        header = _check_header(first)
        width = len(header)
        # A row may leave out trailing optional columns, as some programs write them.
        needed = 1 + max(i for i, name in enumerate(header) if name in REQUIRED_COLUMNS)
        yield None
        for row_number, cells in records:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines are not rows
            if len(cells) > width and any(c.strip() for c in cells[width:]):
                yield row_number, {"": f"{len(cells)} cells, but the header has {width}"}
                continue
            if len(cells) < needed:
                yield row_number, {"": f"{len(cells)} of {width} columns: the row stops early"}
                continue
            padded = cells[:width] + [""] * (width - len(cells))
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
            f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)} (description is optional), "
            "separated by commas, semicolons or tabs."
        )
    duplicated = sorted({column for column in header if column and header.count(column) > 1})
    if duplicated:
        raise BadUpload(f"Duplicated column(s): {', '.join(duplicated)}.")
    return header


def _csv_records(file: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    try:
        lines = []  # up to the header, the first line with text: it tells the delimiter
        for line in text:
            lines.append(line)
            if line.strip():
                break
        reader = csv.reader(itertools.chain(lines, text), delimiter=_delimiter(lines))
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


def _delimiter(lines: list[str]) -> str:
    """The header's most frequent delimiter: spreadsheets in many languages save with ';'."""
    header = lines[-1] if lines else ""
    return max(DELIMITERS, key=header.count)  # the first, ",", when none is there


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


class _Superseded(Exception):
    """The job was resumed by another run: this one stops, its batch rolled back."""


def run_import(job_id: int) -> None:
    """Import the rows of a job's file. Runs in after_response's worker thread.

    A resumed job starts after the rows already done: each batch commits its books together
    with the job's counters, so ``rows_done`` is exactly where the last run stopped.
    """
    job = ImportJob.objects.get(pk=job_id)
    try:
        _update(job, status=ImportJob.Status.RUNNING, started_at=job.started_at or timezone.now())
        with default_storage.open(job.stored_name, "rb") as file:
            rows = [row for row in read_rows(file, job.file_format) if row is not None]
        _update(job, total_rows=len(rows))
        for batch in _batches(rows[job.rows_done :], BATCH_ROWS):
            _import_batch(job, batch)
    except _Superseded:
        logger.warning("Import #%d: resumed by another run; this one stops", job.pk)
        return
    except Exception as error:
        # The whole job failed (the file vanished, the database went away): say so on the
        # job page, and let after_response log the traceback and count the failure.
        _update(job, status=ImportJob.Status.FAILED, message=str(error), finished_at=timezone.now())
        raise
    _update(job, status=ImportJob.Status.DONE, finished_at=timezone.now())
    default_storage.delete(job.stored_name)
    job.refresh_from_db()
    logger.info(
        "Import #%d: %d imported, %d skipped, %d refused",
        job.pk,
        job.imported,
        job.skipped,
        job.failed,
    )
    if job.imported:
        schedule_publish()


def _update(job: ImportJob, **fields: Any) -> None:
    """Update the job if this run still owns it (see ``ImportJob.attempt``); else stop."""
    # QuerySet.update() leaves auto_now fields alone: updated_at is what tells a stalled job.
    mine = ImportJob.objects.filter(pk=job.pk, attempt=job.attempt)
    if not mine.update(updated_at=timezone.now(), **fields):
        raise _Superseded


def _batches(rows: list[tuple[int, Row]], size: int) -> Iterable[list[tuple[int, Row]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _import_batch(job: ImportJob, batch: list[tuple[int, Row]]) -> None:
    # Checked before the transaction, which holds SQLite's one write lock while it lasts.
    checked = [(row_number, _checked(values)) for row_number, values in batch]
    errors = []
    with transaction.atomic():
        isbns = [book.isbn for _, book in checked if isinstance(book, Book)]
        # Uniqueness, for the whole batch in one query: the books of the file so far are in.
        known = Book.objects.in_bulk(isbns, field_name="isbn")
        new, skipped = [], 0
        for row_number, book in checked:
            if isinstance(book, str):
                reason = book
            elif book.isbn not in known:
                known[book.isbn] = book
                new.append((row_number, book))
                continue
            elif not (differences := book.same_as(known[book.isbn])):
                skipped += 1  # imported before, by this file or another one
                continue
            else:
                reason = _duplicate(differences)
            errors.append(ImportRowError(job=job, row_number=row_number, reason=reason))
        imported = 0
        for row_number, book in new:
            try:
                with transaction.atomic():  # a savepoint: the row is saved whole, or not at all
                    book.save(force_insert=True)
            except IntegrityError:  # another import saved the same ISBN since the check
                same = Book.objects.filter(isbn=book.isbn).first()
                if same is not None and not book.same_as(same):
                    skipped += 1
                    continue
                reason = _duplicate(book.same_as(same) if same else [])
                errors.append(ImportRowError(job=job, row_number=row_number, reason=reason))
            else:
                imported += 1
        errors.sort(key=lambda error: error.row_number)
        ImportRowError.objects.bulk_create(errors)
        _update(
            job,
            rows_done=F("rows_done") + len(batch),
            imported=F("imported") + imported,
            skipped=F("skipped") + skipped,
            failed=F("failed") + len(errors),
        )


def _checked(values: Row) -> Book | str:
    """The row as a valid book (uniqueness aside), or why it is not one."""
    try:
        return _book(values)
    except ValidationError as error:
        return _why(error)


def _book(values: Row) -> Book:
    if "" in values:  # a row with more, or fewer, cells than the header
        raise ValidationError(values[""])
    book_type = values["book_type"].strip()
    book = Book(
        title=values["title"].strip(),
        author=values["author"].strip(),
        book_type=BOOK_TYPES.get(book_type.lower(), book_type),
        isbn=normalize_isbn(values["isbn"]),
        year_published=values["year_published"].strip() or None,
        price=_decimal(values["price"]) or None,
        no_of_pages=values["no_of_pages"].strip() or None,
        quantity=values["quantity"].strip() or None,
        description=values.get("description", "").strip(),
    )
    # Every field's validators; uniqueness is checked for the whole batch at once.
    book.full_clean(validate_unique=False, validate_constraints=False)
    return book


def _decimal(value: str) -> str:
    """Accept a decimal comma (9,99), as spreadsheets in many languages write it."""
    value = value.strip()
    if value.count(",") == 1 and "." not in value:
        return value.replace(",", ".")
    return value


def _duplicate(differences: list[str]) -> str:
    other = f", with another {', '.join(differences)}" if differences else ""
    return f"isbn: A book with this ISBN already exists{other} (identical rows are skipped)."


def _why(error: ValidationError) -> str:
    if not hasattr(error, "error_dict"):
        return "; ".join(error.messages)
    return "; ".join(
        f"{field}: {message}"
        for field, messages in error.message_dict.items()
        for message in messages
    )
