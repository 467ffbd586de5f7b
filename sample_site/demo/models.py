from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

FIRST_PRINTED_YEAR = 1450  # Gutenberg


class Note(models.Model):
    """A thank-you note: created by the request, "sent" by a deferred call after the response."""

    recipient = models.CharField(max_length=100)
    answered_at = models.DateTimeField(help_text="When the view answered the request.")
    started_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    thread = models.CharField(max_length=100, blank=True, help_text="Thread that sent the note.")
    pid = models.PositiveIntegerField(null=True, blank=True, help_text="Process that sent it.")

    class Meta:
        ordering = ("-answered_at",)

    def __str__(self) -> str:
        return f"Thank-you note to {self.recipient}"

    def started_after(self) -> float | None:
        """Seconds from the response to the start of the deferred call."""
        if self.started_at is None:
            return None
        return (self.started_at - self.answered_at).total_seconds()

    def sent_after(self) -> float | None:
        """Seconds from the response to the end of the deferred call."""
        if self.sent_at is None:
            return None
        return (self.sent_at - self.answered_at).total_seconds()


# -- the catalogue --------------------------------------------------------------------------


def validate_isbn(value: str) -> None:
    """An ISBN-10 or ISBN-13 with a correct check digit (digits only: see ``normalize_isbn``)."""
    if len(value) == 13 and value.isdigit():
        if value == isbn13(value[:12]):
            return
    elif len(value) == 10 and value[:9].isdigit() and (value[9].isdigit() or value[9] == "X"):
        digits = [int(d) for d in value[:9]] + [10 if value[9] == "X" else int(value[9])]
        if sum((10 - i) * d for i, d in enumerate(digits)) % 11 == 0:
            return
    raise ValidationError(f"{value!r} is not a valid ISBN-10 or ISBN-13 (check digit included).")


def isbn13(first_twelve: str) -> str:
    """An ISBN-13 from its first twelve digits: the check digit appended."""
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(first_twelve))
    return first_twelve + str((10 - total % 10) % 10)


def normalize_isbn(value: str) -> str:
    return value.replace("-", "").replace(" ", "").upper()


def validate_not_future_year(value: int) -> None:
    if value > timezone.now().year:
        raise ValidationError(f"{value} is in the future.")


class BookType(models.TextChoices):
    SCI_TECH = "sci-tech", "Sci-tech"
    MAGAZINE = "magazine", "Magazine"
    COMIC = "comic", "Comic"
    CLASSIC = "classic", "Classic"
    HORROR = "horror", "Horror"


# What an import row sets: a row is "already imported" if the book has these values.
IMPORTED_FIELDS = (
    "title",
    "author",
    "book_type",
    "isbn",
    "year_published",
    "price",
    "no_of_pages",
    "quantity",
    "description",
)


class Book(models.Model):
    title = models.CharField(max_length=200)
    author = models.CharField(max_length=200)
    book_type = models.CharField(
        max_length=20,
        choices=BookType.choices,
        error_messages={"invalid_choice": f"%(value)r is not one of {', '.join(BookType.labels)}."},
    )
    isbn = models.CharField("ISBN", max_length=13, unique=True, validators=[validate_isbn])
    year_published = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(FIRST_PRINTED_YEAR), validate_not_future_year]
    )
    price = models.DecimalField(max_digits=8, decimal_places=2, validators=[MinValueValidator(0)])
    no_of_pages = models.PositiveIntegerField(
        "number of pages", validators=[MinValueValidator(1), MaxValueValidator(100_000)]
    )
    quantity = models.PositiveIntegerField(help_text="Copies in stock.")
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("title", "pk")

    def __str__(self) -> str:
        return f"{self.title} ({self.author})"

    def get_absolute_url(self) -> str:
        return reverse("book", args=[self.pk])

    def same_as(self, other: Book) -> list[str]:
        """The imported fields in which this book differs from ``other``: empty if none."""
        return [name for name in IMPORTED_FIELDS if getattr(self, name) != getattr(other, name)]

    def problems(self) -> list[str]:
        """What is impossible about this record, by the model's own validators.

        Empty for every book saved through a form or an import (they run the validators);
        legacy rows written around them may have some.
        """
        try:
            self.full_clean(validate_unique=False, validate_constraints=False)
        except ValidationError as error:
            return [
                f"{field}: {message}"
                for field, messages in error.message_dict.items()
                for message in messages
            ]
        return []


class BadBookReport(models.Model):
    """A mail sent to the content team about a book's problems: each is sent once."""

    book = models.ForeignKey(Book, on_delete=models.CASCADE, related_name="reports")
    problems = models.TextField(help_text="What was wrong, one problem a line.")
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-sent_at", "-pk")
        # Decides, in the database, which of the readers of a broken book sends the mail.
        constraints = (
            models.UniqueConstraint(fields=["book", "problems"], name="one_report_per_problem"),
        )

    def __str__(self) -> str:
        return f"Report on book #{self.book_id}"


# -- use case 1: bulk import ----------------------------------------------------------------


class ImportJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    original_name = models.CharField(max_length=255, help_text="The name the file was uploaded as.")
    stored_name = models.CharField(max_length=255, help_text="Its name in default_storage.")
    file_format = models.CharField(max_length=4, choices=[("csv", "CSV"), ("xlsx", "Excel")])
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    total_rows = models.PositiveIntegerField(null=True, blank=True, help_text="Known once read.")
    rows_done = models.PositiveIntegerField(default=0)
    imported = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(
        default=0, help_text="Rows already in the catalogue, identical: imported before."
    )
    failed = models.PositiveIntegerField(default=0, help_text="Rows refused.")
    message = models.TextField(blank=True, help_text="Why the whole job failed, if it did.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Raised when a stalled job is resumed: a run only commits while the attempt is its own.
    attempt = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"Import #{self.pk} of {self.original_name}"

    def get_absolute_url(self) -> str:
        return reverse("import_job", args=[self.pk])

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @staticmethod
    def stalled_before() -> datetime:
        """An unfinished job without progress since then has stalled: its process has died."""
        return timezone.now() - timedelta(seconds=settings.DEMO_STALLED_AFTER)

    @property
    def stalled(self) -> bool:
        return not self.finished and self.updated_at < self.stalled_before()

    @property
    def status_label(self) -> str:
        return "Stalled" if self.stalled else self.get_status_display()

    @property
    def percent(self) -> int:
        if self.finished:
            return 100
        if not self.total_rows:
            return 0
        return min(100, self.rows_done * 100 // self.total_rows)


class ImportRowError(models.Model):
    """A row that was not imported, and why. Row 1 is the header, as in a spreadsheet."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="row_errors")
    row_number = models.PositiveIntegerField()
    reason = models.TextField()

    class Meta:
        ordering = ("job", "row_number")

    def __str__(self) -> str:
        return f"Row {self.row_number}: {self.reason}"


# -- use cases 3 and 4: another system's data, and its webhooks ------------------------------


class SupplierOffer(models.Model):
    """The supplier's price and stock for an ISBN: a cached copy of the remote service's data."""

    isbn = models.CharField("ISBN", max_length=13, unique=True)
    price = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    in_stock = models.PositiveIntegerField(null=True, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True, help_text="None: never fetched.")
    # The refresh lease: set by the one reader whose conditional UPDATE claimed the refresh.
    refreshing_since = models.DateTimeField(null=True, blank=True)
    refreshes = models.PositiveIntegerField(default=0, help_text="Successful refreshes.")
    last_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"Supplier offer for {self.isbn}"


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    event = models.CharField(max_length=50)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} webhook #{self.pk} ({self.status})"


class FakeServiceHit(models.Model):
    """A request the fake remote service received: how the demo shows what reached it."""

    kind = models.CharField(max_length=20)  # "offer" or "webhook"
    key = models.CharField(max_length=100)  # the ISBN, or the event
    status = models.PositiveSmallIntegerField()
    received_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=300, blank=True, help_text="Why the caller saw otherwise.")

    class Meta:
        ordering = ("-received_at", "-pk")

    def __str__(self) -> str:
        return f"{self.kind} {self.key} -> {self.status}"


# -- use case 6: the status page ------------------------------------------------------------


class CallRecord(models.Model):
    """One deferred call's outcome, written by a signal receiver in the thread that ran it.

    A row per call, so the status page can add up all server processes, not just its own.
    """

    name = models.CharField(max_length=200)
    outcome = models.CharField(max_length=10)  # "done" or "failed"
    duration = models.FloatField(help_text="Seconds.")
    error = models.TextField(blank=True)
    pid = models.PositiveIntegerField()
    thread = models.CharField(max_length=100)
    finished_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-finished_at", "-pk")

    def __str__(self) -> str:
        return f"{self.name} {self.outcome}"
