"""Checked by mypy --strict in CI (never run): how views annotate request.defer.

Each ``type: ignore[...]`` below must stay needed: with warn_unused_ignores, mypy fails if
``defer`` stopped checking the arguments against the function.
"""

from __future__ import annotations

from django.http import HttpResponse

import after_response
from after_response import DeferredCall
from after_response.types import DeferringRequest, SupportsDefer


def send_receipt(order_id: int, *, email: str) -> None: ...


def view(request: DeferringRequest) -> HttpResponse:
    call: DeferredCall = request.defer(send_receipt, 1, email="a@example.com")
    call.cancel()
    request.defer(send_receipt, "1", email="a@example.com")  # type: ignore[arg-type]
    request.defer(send_receipt, 1)  # type: ignore[call-arg]
    after_response.defer(send_receipt, 1, email="a@example.com")
    after_response.defer(send_receipt, 1, mail="a@example.com")  # type: ignore[call-arg]
    request.on_response_sent.add(send_receipt, (1,), {"email": "a"}, wait_for_commit=False)
    return HttpResponse(str(len(request.on_response_sent)))


def notify(request: SupportsDefer) -> None:
    """Code that only defers takes any request that can: a DeferringRequest satisfies it."""
    request.defer(send_receipt, 2, email="b@example.com")
    request.defer(send_receipt, 2)  # type: ignore[call-arg]


def calls_notify(request: DeferringRequest) -> None:
    notify(request)
