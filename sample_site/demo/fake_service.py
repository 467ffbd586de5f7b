"""The "other system" of the demo: a supplier's JSON API, served by the demo itself.

The answers are plain functions, so the tests can route httpx to them without a server. Each
request is recorded as a FakeServiceHit, which is how the demo shows what reached the service.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import FakeServiceHit

logger = logging.getLogger(__name__)

# What the webhook endpoint does, chosen by the caller (the demo's "sell" form): the demo can
# show a supplier that is down or hangs without taking anything down.
BEHAVIOURS = {
    "ok": "answers 204",
    "error": "answers 503 (down for maintenance)",
    "slow": "hangs past the timeout",
}
LATE_BY = 1.0  # seconds past the caller's timeout that a "slow" webhook answers


def offer(isbn: str) -> tuple[int, dict[str, Any]]:
    """The supplier's price and stock for an ISBN: they change every minute."""
    FakeServiceHit.objects.create(kind="offer", key=isbn, status=200)
    now = timezone.now()
    seed = zlib.crc32(isbn.encode())
    price = Decimal(5 + seed % 40) + Decimal(now.minute % 10) / 10 - Decimal("0.01")
    return 200, {
        "isbn": isbn,
        "price": str(price),
        "in_stock": (seed + now.minute) % 50,
        "served_at": now.isoformat(),
    }


def webhook(body: dict[str, Any], behaviour: str, took: float = 0.0) -> int:
    """Receive a webhook; return the status the supplier answers with, ``took`` seconds late.

    The hit is recorded when the answer goes out. An answer later than the caller's timeout
    says so: the caller has given up (ReadTimeout) and recorded a failure, while this log
    shows the status that nobody read.
    """
    status = 503 if behaviour == "error" else 204
    timeout = settings.DEMO_REMOTE_TIMEOUT
    note = ""
    if took > timeout:
        note = (
            f"Answered after {took:.1f} s, past the caller's {timeout:g} s timeout: "
            "the caller had given up (ReadTimeout) and never saw this answer."
        )
        logger.info("Fake supplier: webhook answered %d. %s", status, note)
    FakeServiceHit.objects.create(
        kind="webhook", key=str(body.get("event", "?"))[:100], status=status, note=note
    )
    return status


@require_GET
def offer_view(request: HttpRequest, isbn: str) -> JsonResponse:
    time.sleep(settings.DEMO_REMOTE_LATENCY)  # a remote service is slow
    status, data = offer(isbn)
    return JsonResponse(data, status=status)


@csrf_exempt  # called by servers with JSON, not by browsers with a session
@require_POST
def webhook_view(request: HttpRequest) -> HttpResponse:
    started = time.monotonic()
    behaviour = request.GET.get("behaviour", "ok")
    if behaviour == "slow":
        time.sleep(settings.DEMO_REMOTE_TIMEOUT + LATE_BY)  # the caller has given up by then
    try:
        body = json.loads(request.body)
    except ValueError:
        return JsonResponse({"error": "the body is not JSON"}, status=400)
    return HttpResponse(status=webhook(body, behaviour, took=time.monotonic() - started))
