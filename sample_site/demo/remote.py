"""Use cases 3 and 4: another system's data, cached and refreshed on access, and its webhooks.

Every call to the remote service has a timeout: a call that hangs would hold one of
after_response's worker threads for good.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from django.conf import settings
from django.db.models import F, Q
from django.http import HttpRequest
from django.utils import timezone

from .models import SupplierOffer, WebhookDelivery

logger = logging.getLogger(__name__)


class RemoteError(Exception):
    """The remote service failed or answered nonsense; the message says how."""


def base_url(request: HttpRequest) -> str:
    """The remote service's URL, decided in the request (deferred calls have no request).

    The demo plays the remote service itself, at /fake-remote/ on the host it is served on.
    """
    return settings.DEMO_REMOTE_URL or request.build_absolute_uri("/fake-remote/")


def make_client() -> httpx.Client:
    """One client per call; the tests replace this to route requests to the fake service."""
    return httpx.Client(timeout=settings.DEMO_REMOTE_TIMEOUT)


# -- cached remote data ---------------------------------------------------------------------


def cached_offer(isbn: str) -> SupplierOffer:
    """The cached copy, as it is: never-fetched (all None) the first time an ISBN is read."""
    offer, _ = SupplierOffer.objects.get_or_create(isbn=isbn)
    return offer


def is_stale(offer: SupplierOffer, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    return offer.refreshed_at is None or offer.refreshed_at < now - _max_age()


def claim_refresh(offer_id: int) -> datetime | None:
    """Take the refresh lease of a stale offer; return its timestamp, or None if not ours.

    One conditional UPDATE decides, in the database, for every thread and process at once:
    it matches only while the offer is stale and nobody holds a lease younger than
    DEMO_REFRESH_LEASE (a refresh that died, with its process, is retried after that). The
    database runs concurrent UPDATEs of one row one after the other and re-checks the WHERE
    for the later ones, so exactly one reader sees one affected row.
    """
    now = timezone.now()
    lease = timedelta(seconds=settings.DEMO_REFRESH_LEASE)
    claimed = (
        SupplierOffer.objects.filter(pk=offer_id)
        .filter(Q(refreshed_at__isnull=True) | Q(refreshed_at__lt=now - _max_age()))
        .filter(Q(refreshing_since__isnull=True) | Q(refreshing_since__lt=now - lease))
        .update(refreshing_since=now)
    )
    return now if claimed == 1 else None


def refresh_offer(offer_id: int, claimed_at: datetime, remote_url: str) -> None:
    """Fetch the offer and store it, if the lease taken at ``claimed_at`` is still ours.

    Deferred by the one reader that claimed the refresh. On failure the lease is kept until it
    expires, so a failing remote service is asked again once per lease, not once per reader.
    """
    isbn = SupplierOffer.objects.values_list("isbn", flat=True).get(pk=offer_id)
    ours = SupplierOffer.objects.filter(pk=offer_id, refreshing_since=claimed_at)
    try:
        with make_client() as client:
            response = client.get(f"{remote_url}offers/{isbn}.json")
            response.raise_for_status()
            data = response.json()
        price, in_stock = Decimal(str(data["price"])), int(data["in_stock"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError, InvalidOperation) as error:
        ours.update(last_error=describe(error))
        raise RemoteError(f"Could not refresh the offer for {isbn}: {describe(error)}") from error
    updated = ours.update(
        price=price,
        in_stock=in_stock,
        refreshed_at=timezone.now(),
        refreshing_since=None,
        refreshes=F("refreshes") + 1,
        last_error="",
    )
    if not updated:  # took longer than the lease, and another reader took over
        logger.warning("Offer %s: refresh lease lost, result dropped", isbn)


def describe(error: Exception) -> str:
    """One line for the status page; the log has the traceback."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:500]


def _max_age() -> timedelta:
    return timedelta(seconds=settings.DEMO_OFFER_MAX_AGE)


# -- webhooks -------------------------------------------------------------------------------


def deliver_webhook(delivery_id: int, url: str) -> None:
    """POST a webhook. A failure is recorded and raised (after_response logs it with the
    request's route and counts it); the user's response went out long before."""
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    body: dict[str, Any] = {"event": delivery.event, "id": delivery.pk, **delivery.payload}
    try:
        with make_client() as client:
            response = client.post(url, json=body)
            response.raise_for_status()
    except httpx.HTTPError as error:
        status = error.response.status_code if isinstance(error, httpx.HTTPStatusError) else None
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            status=WebhookDelivery.Status.FAILED,
            response_status=status,
            error=describe(error),
            finished_at=timezone.now(),
        )
        raise RemoteError(
            f"Webhook {delivery.event} #{delivery.pk} failed: {describe(error)}"
        ) from error
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        status=WebhookDelivery.Status.DELIVERED,
        response_status=response.status_code,
        finished_at=timezone.now(),
    )
