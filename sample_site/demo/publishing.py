"""Use case 5, writing files: publish a static HTML snapshot of the catalogue after changes.

The snapshot is written to a temporary file in the same directory, then renamed over the old
one with ``os.replace`` (atomic on POSIX): a reader, or the web server in front, sees the old
file or the new one, never half of one. A lock file serialises the processes that publish at
the same time, so the last rename is always of the latest catalogue.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from pathlib import Path

import after_response
from django.conf import settings
from django.template.loader import render_to_string
from django.utils import timezone

from .models import Book

logger = logging.getLogger(__name__)


def snapshot_path() -> Path:
    return Path(settings.DEMO_SNAPSHOT_PATH)


def publish_catalogue() -> None:
    path = snapshot_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        books = list(Book.objects.all())
        html = render_to_string(
            "demo/catalogue_snapshot.html", {"books": books, "published_at": timezone.now()}
        )
        descriptor, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(html)
                file.flush()
                os.fsync(file.fileno())  # the data is on disk before the name points at it
            os.chmod(temporary, 0o644)  # mkstemp makes it private to this user
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    logger.info("Published the catalogue (%d books) to %s", len(books), path)


def schedule_publish() -> None:
    """Publish once the response is sent (after commit), once per request however many changes.

    Outside a request (the import's worker thread) the publish goes to the pool at once.
    """
    queue = after_response.current_queue()
    if not any(call.fn is publish_catalogue for call in queue):
        queue.defer(publish_catalogue)
