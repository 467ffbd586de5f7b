from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import after_response
from after_response.types import DeferringRequest
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Avg, Count, F, Max, Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import importing, remote
from .fake_service import BEHAVIOURS
from .forms import NoteForm
from .importing import BadUpload
from .models import (
    Book,
    BookType,
    CallRecord,
    FakeServiceHit,
    ImportJob,
    Note,
    SupplierOffer,
    WebhookDelivery,
    isbn13,
)
from .notify import report_bad_book
from .publishing import schedule_publish, snapshot_path
from .sample_data import generated_csv, workbook_bytes

logger = logging.getLogger(__name__)

SEND_SECONDS = 2.0  # a slow mail server or API, simulated
RECENT = 10  # notes listed
REFRESH_FOR = timedelta(seconds=30)  # reload the page while a note this young is unsent
SAMPLE_CSV = Path(__file__).resolve().parent / "sample_data" / "books.csv"
LARGE_SAMPLE_ROWS = 10_000  # the generated sample: enough rows for the progress to show
BOOKS_PER_PAGE = 100
FAVICON = Path(__file__).resolve().parent / "static" / "demo" / "favicon.ico"


# -- the thank-you note: the smallest use --------------------------------------------------


def send_thank_you(note_id: int) -> None:
    """Runs in one of after_response's worker threads, after the response has been sent."""
    started_at = timezone.now()
    time.sleep(SEND_SECONDS)
    thread = threading.current_thread().name
    Note.objects.filter(pk=note_id).update(
        started_at=started_at, sent_at=timezone.now(), thread=thread, pid=os.getpid()
    )
    logger.info("Sent thank-you note %d from thread %s of process %d", note_id, thread, os.getpid())


def index(request: DeferringRequest) -> HttpResponse:
    form = NoteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        note = Note.objects.create(
            recipient=form.cleaned_data["recipient"], answered_at=timezone.now()
        )
        # Pass the primary key, not the object: the call runs later, in another thread.
        request.defer(send_thank_you, note.pk)
        return redirect("index")

    notes = list(Note.objects.all()[:RECENT])
    young = timezone.now() - REFRESH_FOR
    return render(
        request,
        "demo/index.html",
        {
            "form": form,
            "notes": notes,
            "refresh": any(n.sent_at is None and n.answered_at > young for n in notes),
            "stats": _stats(),
            "send_seconds": SEND_SECONDS,
        },
    )


# -- 1. bulk import -------------------------------------------------------------------------


def import_new(request: DeferringRequest) -> HttpResponse:
    error = ""
    if request.method == "POST":
        try:
            job = _accept_upload(request)
        except BadUpload as bad:
            error = str(bad)
        else:
            return redirect(job)
    return render(
        request,
        "demo/import_new.html",
        {
            "error": error,
            "columns": importing.REQUIRED_COLUMNS + importing.OPTIONAL_COLUMNS,
            "large_sample_rows": LARGE_SAMPLE_ROWS,
            "book_types": BookType.labels,
            "jobs": ImportJob.objects.all()[:10],
        },
        status=400 if error else 200,
    )


@csrf_exempt  # for scripts (curl -F file=@books.csv); a real API would authenticate by token
@require_POST
def import_api(request: DeferringRequest) -> JsonResponse:
    try:
        job = _accept_upload(request)
    except BadUpload as bad:
        return JsonResponse({"error": str(bad)}, status=400)
    return JsonResponse(
        {
            "job": job.pk,
            "status": job.status,
            "status_url": request.build_absolute_uri(f"{job.get_absolute_url()}status.json"),
            "page_url": request.build_absolute_uri(job.get_absolute_url()),
        },
        status=202,
    )


def _accept_upload(request: DeferringRequest) -> ImportJob:
    upload = request.FILES.get("file")
    if upload is None:
        raise BadUpload("No file: send it as the 'file' field of a multipart/form-data POST.")
    file_format = importing.check_upload(upload)
    # Saved first: Django closes the upload once the response is sent, and the library
    # refuses an UploadedFile argument for that reason. The call gets the job's id.
    job = importing.start_import(upload, file_format)
    request.defer(importing.run_import, job.pk)
    return job


def import_job(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(ImportJob, pk=pk)
    return render(
        request,
        "demo/import_job.html",
        {
            "job": job,
            "status": _job_status(job),
            "row_errors": job.row_errors.all()[: importing.MAX_ERRORS_LISTED],
            "max_errors": importing.MAX_ERRORS_LISTED,
        },
    )


@require_POST
def import_resume(request: DeferringRequest, pk: int) -> HttpResponse:
    """Run a stalled job again, from the last row it committed.

    One conditional UPDATE claims it, for one reader in any process: it matches only while the
    job is still stalled, and raises its attempt, so a run of the old attempt that is alive
    after all stops at its next batch instead of importing beside the new one.
    """
    job = get_object_or_404(ImportJob, pk=pk)
    claimed = (
        ImportJob.objects.filter(pk=pk, updated_at__lt=ImportJob.stalled_before())
        .exclude(status__in=(ImportJob.Status.DONE, ImportJob.Status.FAILED))
        .update(attempt=F("attempt") + 1, updated_at=timezone.now())
    )
    if claimed:
        request.defer(importing.run_import, job.pk)
        messages.success(request, f"Import #{job.pk} resumes after row {job.rows_done + 1}.")
    else:
        messages.error(request, f"Import #{job.pk} has not stalled: it was not resumed.")
    return redirect(job)


@require_GET
def import_status(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse(_job_status(get_object_or_404(ImportJob, pk=pk)))


def _job_status(job: ImportJob) -> dict[str, object]:
    errors = job.row_errors.values_list("row_number", "reason")[: importing.MAX_ERRORS_LISTED]
    return {
        "id": job.pk,
        "file": job.original_name,
        "status": job.status,
        "label": job.status_label,  # "Stalled" rather than "Running" once it is
        "finished": job.finished,
        "stalled": job.stalled,
        "total": job.total_rows,
        "done": job.rows_done,
        "imported": job.imported,
        "skipped": job.skipped,
        "failed": job.failed,
        "percent": job.percent,
        "message": job.message,
        "errors": [{"row": row, "reason": reason} for row, reason in errors],
    }


@require_GET
def sample_csv(request: HttpRequest) -> FileResponse:
    return FileResponse(SAMPLE_CSV.open("rb"), as_attachment=True, filename="books.csv")


@require_GET
def sample_xlsx(request: HttpRequest) -> HttpResponse:
    try:
        content = workbook_bytes(SAMPLE_CSV)
    except ImportError as error:
        raise Http404("openpyxl is not installed") from error
    response = HttpResponse(
        content,
        content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    )
    response["Content-Disposition"] = 'attachment; filename="books.xlsx"'
    return response


@require_GET
def sample_large_csv(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(generated_csv(LARGE_SAMPLE_ROWS), content_type="text/csv")
    filename = f"books-{LARGE_SAMPLE_ROWS}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_GET
def favicon(request: HttpRequest) -> FileResponse:
    """Browsers ask for /favicon.ico on every page: answer it (a real site's web server does)."""
    response = FileResponse(FAVICON.open("rb"), content_type="image/x-icon")
    response["Cache-Control"] = "max-age=86400"
    return response


# -- the catalogue: 2. error notification, 3. cached remote data, 4. webhook, 5. snapshot ---


def book_list(request: DeferringRequest) -> HttpResponse:
    if request.method == "POST":  # the "legacy data" button
        book = _legacy_book()
        schedule_publish()
        return redirect(book)
    published = snapshot_path()
    page = Paginator(Book.objects.all(), BOOKS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "demo/books.html",
        {
            "page": page,
            "books": page.object_list,
            "published_at": (
                datetime.fromtimestamp(published.stat().st_mtime, tz=UTC)
                if published.exists()
                else None
            ),
        },
    )


def _legacy_book() -> Book:
    """A record with impossible fields, written around the validators as old data would be."""
    return Book.objects.create(
        title="The Time Traveller's Almanac",
        author="Legacy System",
        book_type=BookType.CLASSIC,
        isbn=isbn13("979" + "".join(secrets.choice("0123456789") for _ in range(9))),
        year_published=2999,
        price=Decimal("-4.99"),
        no_of_pages=0,
        quantity=3,
        description="Imported in 2009 by a script that checked nothing.",
    )


def book_detail(request: DeferringRequest, pk: int) -> HttpResponse:
    book = get_object_or_404(Book, pk=pk)
    problems = book.problems()
    if problems:
        return _bad_book(request, book, problems)
    offer = remote.cached_offer(book.isbn)
    refreshing = remote.is_stale(offer)
    if refreshing:
        # Answer with the cached copy now; the one reader that wins the database lease
        # refreshes it after the response. Everyone else only reads.
        claimed_at = remote.claim_refresh(offer.pk)
        if claimed_at is not None:
            request.defer(remote.refresh_offer, offer.pk, claimed_at, remote.base_url(request))
    return render(
        request,
        "demo/book.html",
        {
            "book": book,
            "offer": offer,
            "refreshing": refreshing,
            "max_age": settings.DEMO_OFFER_MAX_AGE,
            "behaviours": BEHAVIOURS,
        },
    )


class _BadData(Exception):
    pass


@require_POST
def sell_copy(request: DeferringRequest, pk: int) -> HttpResponse:
    behaviour = request.POST.get("supplier", "ok")
    if behaviour not in BEHAVIOURS:
        return HttpResponse(f"Unknown supplier behaviour {behaviour!r}.", status=400)
    try:
        with transaction.atomic():
            book = get_object_or_404(Book.objects.select_for_update(), pk=pk)
            if book.quantity == 0:
                messages.error(request, f"{book.title} is sold out.")
                return redirect(book)
            book.quantity -= 1
            book.save(update_fields=["quantity"])
            problems = book.problems()
            if problems:
                # Reported even though the sale is rolled back: wait_for_commit=False.
                report_bad_book(request, book, problems)
                raise _BadData
            delivery = _record_delivery(book)
            # Both wait for the commit, and are discarded if the sale rolls back.
            request.defer(
                remote.deliver_webhook,
                delivery.pk,
                f"{remote.base_url(request)}webhooks/stock/?behaviour={behaviour}",
            )
            schedule_publish()
    except _BadData:
        return render(request, "demo/book_problem.html", {"book_id": pk}, status=500)
    messages.success(request, f"Sold a copy of {book.title}; {book.quantity} left.")
    return redirect(book)


def _record_delivery(book: Book) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        event="stock.changed", payload={"isbn": book.isbn, "quantity": book.quantity}
    )


def _bad_book(request: DeferringRequest, book: Book, problems: list[str]) -> HttpResponse:
    report_bad_book(request, book, problems)
    return render(request, "demo/book_problem.html", {"book_id": book.pk}, status=500)


@require_GET
def published_catalogue(request: HttpRequest) -> HttpResponse:
    """The published snapshot (a real site has the web server serve the file)."""
    try:
        return HttpResponse(snapshot_path().read_bytes(), content_type="text/html; charset=utf-8")
    except FileNotFoundError:
        raise Http404("The catalogue has not been published yet.") from None


# -- 6. status ------------------------------------------------------------------------------


def status(request: HttpRequest) -> HttpResponse:
    done, failed = Q(outcome="done"), Q(outcome="failed")
    return render(
        request,
        "demo/status.html",
        {
            "stats": _stats(),
            "by_name": CallRecord.objects.values("name")
            .annotate(
                done=Count("pk", filter=done),
                failed=Count("pk", filter=failed),
                average=Avg("duration"),
                last=Max("finished_at"),
            )
            .order_by("name"),
            "pids": list(
                CallRecord.objects.order_by("pid").values_list("pid", flat=True).distinct()
            ),
            "recent": CallRecord.objects.all()[:15],
            "failures": CallRecord.objects.filter(failed)[:10],
            "deliveries": WebhookDelivery.objects.all()[:10],
            "offers": SupplierOffer.objects.exclude(refreshed_at=None).order_by("-refreshed_at")[
                :10
            ],
            "hits": FakeServiceHit.objects.all()[:10],
        },
    )


def _stats() -> dict[str, object]:
    stats = after_response.stats()
    values = dataclasses.asdict(stats)
    values["problems"] = "; ".join(stats.problems) or "none"
    return values
