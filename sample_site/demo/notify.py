"""Use case 2, error notification: tell the content team about a book with impossible data."""

from __future__ import annotations

from after_response.types import DeferringRequest
from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse

from .models import Book


def report_bad_book(request: DeferringRequest, book: Book, problems: list[str]) -> None:
    """Mail the content team once the response is sent, whatever happens to the transaction.

    The view may be inside ``transaction.atomic()`` and about to roll back because of this very
    problem: a plain ``request.defer()`` would wait for a commit that never comes, and the
    report would be discarded with the rollback. ``wait_for_commit=False`` sends it anyway.
    Only plain values are passed: the call runs after the request is gone.
    """
    request.on_response_sent.add(
        mail_content_team,
        kwargs={
            "book_id": book.pk,
            "title": book.title,
            "problems": problems,
            "admin_url": request.build_absolute_uri(
                reverse("admin:demo_book_change", args=[book.pk])
            ),
            "seen_at": f"{request.method} {request.path}",
        },
        wait_for_commit=False,
    )


def mail_content_team(
    *, book_id: int, title: str, problems: list[str], admin_url: str, seen_at: str
) -> None:
    lines = "\n".join(f"- {problem}" for problem in problems)
    send_mail(
        subject=f"[catalogue] Book #{book_id} has impossible data",
        message=(
            f"A reader was shown an error page for book #{book_id}, {title!r} ({seen_at}).\n\n"
            f"What is wrong with it:\n{lines}\n\nFix it in the admin: {admin_url}\n"
        ),
        from_email=None,  # DEFAULT_FROM_EMAIL
        recipient_list=settings.DEMO_CONTENT_TEAM,
    )
