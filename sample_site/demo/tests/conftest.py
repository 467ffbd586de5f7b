"""The demo's use cases through Django's test client, with deferred calls run inline.

``AFTER_RESPONSE_IMMEDIATE`` runs each request's deferred calls when the test client closes
the response, in this thread and inside the test's transaction; ``capture_deferred()`` holds
them back instead, so a test can look at the state the response left before they run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import LazySettings

from demo import fake_service, remote


@pytest.fixture(autouse=True)
def demo_settings(settings: LazySettings, tmp_path: Path) -> None:
    settings.AFTER_RESPONSE_IMMEDIATE = True
    settings.MEDIA_ROOT = tmp_path / "uploads"
    settings.DEMO_SNAPSHOT_PATH = tmp_path / "public" / "catalogue.html"
    settings.DEMO_REMOTE_LATENCY = 0
    settings.DEMO_REMOTE_URL = None


class FakeRemote:
    """Routes the demo's httpx requests to the fake service's functions, in this thread."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.offer_status = 200  # what the offers endpoint answers

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.startswith("/fake-remote/offers/"):
            if self.offer_status != 200:
                return httpx.Response(self.offer_status)
            status, data = fake_service.offer(path.removeprefix("/fake-remote/offers/")[:-5])
            return httpx.Response(status, json=data)
        if path == "/fake-remote/webhooks/stock/":
            behaviour = request.url.params.get("behaviour", "ok")
            if behaviour == "slow":
                raise httpx.ReadTimeout("timed out", request=request)
            return httpx.Response(fake_service.webhook(json.loads(request.content), behaviour))
        return httpx.Response(404)

    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]


@pytest.fixture
def fake_remote(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRemote]:
    fake = FakeRemote()

    def make_client(**kwargs: Any) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(fake.handle))

    monkeypatch.setattr(remote, "make_client", make_client)
    yield fake
