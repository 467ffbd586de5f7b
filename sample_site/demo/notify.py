"""Use case 2, error notification: tell the content team about a book with impossible data.

Once per book and problem: every reader of a broken book gets the error page, the team gets
one mail. A BadBookReport row records each mail sent; its unique constraint decides, in the
database, which of several concurrent readers (in any process) sends it.
"""

from __future__ import annotations

from after_response.types import DeferringRequest
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse

from .models import BadBookReport, Book


def report_bad_book(request: DeferringRequest, book: Book, problems: list[str]) -> None:
    """Mail the content team once the response is sent, whatever happens to the transaction.

    The view may be inside ``transaction.atomic()`` and about to roll back because of this very
    problem: a plain ``request.defer()`` would wait for a commit that never comes, and the
    report would be discarded with the rollback. ``wait_for_commit=False`` sends it anyway.
    Only plain values are passed: the call runs after the request is gone. Nothing is deferred
    for a problem already reported.
    """
    if BadBookReport.objects.filter(book=book, problems=_key(problems)).exists():
        return
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
    """Send the mail, unless another reader's call has sent it (or is sending it)."""
    try:
        with transaction.atomic():
            report = BadBookReport.objects.create(book_id=book_id, problems=_key(problems))
    except IntegrityError:
        return  # reported already
    try:
        _send(book_id, title, problems, admin_url, seen_at)
    except BaseException:
        report.delete()  # not sent: the next reader tries again
        raise


def _key(problems: list[str]) -> str:
    return "\n".join(sorted(problems))


def _send(book_id: int, title: str, problems: list[str], admin_url: str, seen_at: str) -> None:
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
