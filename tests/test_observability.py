"""Deferred calls stay linked to their request in the tools users watch, on real servers.

Real sentry-sdk (sending to a local ingest server), OpenTelemetry's SDK with Django's
instrumentation (an in-memory exporter the server reads out), django-guid's correlation id in
the logs: under gunicorn (WSGI, Sentry's logging integration on) and uvicorn (ASGI, async views,
logging integration off). The project is tests/e2e/observed_settings.py.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.servers import WAIT, Server, poll, row, server_database, unique

pytest.importorskip("sentry_sdk")
pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.instrumentation.django")

pytestmark = [
    pytest.mark.servers,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(90),
]

SERVERS = {
    # kind: (command, Sentry's logging integration on, view suffix)
    "gunicorn-sync": (
        [
            "-m",
            "gunicorn",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--no-control-socket",
            "django.core.wsgi:get_wsgi_application()",
        ],
        True,
        "",
    ),
    "uvicorn": (
        [
            "-m",
            "uvicorn",
            "--factory",
            "after_response.asgi:get_asgi_application",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        False,
        "-async",
    ),
}


class Ingest:
    """A Sentry ingest endpoint on 127.0.0.1: keeps the error events it receives."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding == "br":
                    import brotli  # type: ignore[import-not-found]

                    body = brotli.decompress(body)
                ingest.receive(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.dsn = f"http://public@127.0.0.1:{self.server.server_address[1]}/1"

    def receive(self, envelope: bytes) -> None:
        lines = envelope.split(b"\n")
        # An envelope: its header, then (item header, payload) pairs.
        index = 1
        while index + 1 < len(lines):
            header = json.loads(lines[index])
            payload = lines[index + 1]
            index += 2
            if header.get("type") == "event":
                with self.lock:
                    self.events.append(json.loads(payload))

    def errors_about(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [event for event in self.events if name in json.dumps(event.get("exception"))]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ingest() -> Iterator[Ingest]:
    started = Ingest()
    yield started
    started.close()


@pytest.fixture(scope="module", params=list(SERVERS))
def observed(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    tmp_path_factory: pytest.TempPathFactory,
    ingest: Ingest,
) -> Iterator[tuple[Server, str]]:
    kind = request.param
    command, logging_on, suffix = SERVERS[kind]
    log_path = tmp_path_factory.mktemp(f"observed-{kind}") / "server.log"
    server = Server(
        kind,
        command,
        log_path,
        server_database(kind),
        workers=0,
        DJANGO_SETTINGS_MODULE="tests.e2e.observed_settings",
        OBSERVED_SENTRY_DSN=ingest.dsn,
        OBSERVED_SENTRY_LOGGING="1" if logging_on else "0",
    )
    try:
        server.wait_until_ready()
        yield server, suffix
    finally:
        server.stop()


def get(server: Server, path: str, **headers: str) -> dict[str, Any]:
    response = httpx.get(server.url + path, headers=headers, timeout=WAIT)
    assert response.status_code == 200, (response.status_code, response.text[:2000])
    result: dict[str, Any] = response.json()
    return result


def spans(server: Server) -> list[dict[str, Any]]:
    return httpx.get(server.url + "/observed/spans/", timeout=WAIT).json()  # type: ignore[no-any-return]


def call_span(server: Server, ids: dict[str, Any], function: str) -> dict[str, Any] | None:
    """The span of the call to ``function`` deferred by the request ``ids`` describes."""
    for span in spans(server):
        if span["name"] == f"after_response tests.e2e.observed_urls.{function}" and (
            span["trace"] == ids["otel_trace"]
        ):
            return span
    return None


def test_a_failure_is_one_sentry_event_of_its_request(observed, ingest):
    server, suffix = observed
    name = unique("fail")
    ids = get(server, f"/observed/fail{suffix}/{name}/", **{"Correlation-ID": name})
    poll(
        lambda: call_span(server, ids, "failing_call"),
        WAIT,
        lambda: server.explain("the failed call has no span"),
    )
    # The span ends after the call's failure was reported and logged: once the server's Sentry
    # client has flushed, every event the call caused has arrived.
    assert get(server, "/observed/flush/") == {"flushed": True}
    events = ingest.errors_about(name)
    assert len(events) == 1, json.dumps(events, indent=1)[:4000]
    event = events[0]
    assert event["tags"]["shop"] == "north"
    assert event["tags"]["after_response.callable"] == "tests.e2e.observed_urls.failing_call"
    assert event["tags"]["after_response.request"] == f"GET observed/fail{suffix}/<str:name>/"
    assert event["user"]["id"] == "42"
    assert event["contexts"]["trace"]["trace_id"] == ids["sentry_trace"]
    assert event["transaction"] == f"/observed/fail{suffix}/{{name}}/"
    assert event["request"]["url"].endswith(f"/observed/fail{suffix}/{name}/")


def test_the_calls_log_lines_carry_the_request_id(observed):
    pytest.importorskip("django_guid")  # not installable with Django 6.0 on Python 3.12
    server, suffix = observed
    name = unique("logged")
    get(server, f"/observed/fail{suffix}/{name}/", **{"Correlation-ID": name})

    def lines() -> list[str]:
        return [line for line in server.log().splitlines() if name in line]

    found = poll(
        lambda: (found := lines()) and any("Deferred call" in line for line in found) and found,
        WAIT,
        lambda: server.explain("the call's log lines are missing"),
    )
    inside = [line for line in found if f"inside the call {name}" in line]
    failed = [line for line in found if "Deferred call" in line]
    assert inside and f"[{name}]" in inside[0], found
    assert failed and f"[{name}]" in failed[0], found


def test_a_call_is_a_span_in_its_requests_trace(observed):
    server, suffix = observed
    name = unique("traced")
    ids = get(server, f"/observed/traced{suffix}/{name}/")
    poll(lambda: row(name), WAIT, lambda: server.explain("the call did not run"))

    span = poll(
        lambda: call_span(server, ids, "traced_call"),
        WAIT,
        lambda: server.explain("no span for the call"),
    )
    assert span["parent"] == ids["otel_span"]  # a child of the request's server span
    attributes = span["attributes"]
    assert attributes["after_response.callable"] == "tests.e2e.observed_urls.traced_call"
    assert attributes["after_response.request"] == f"GET observed/traced{suffix}/<str:name>/"
    assert attributes["http.route"] == f"observed/traced{suffix}/<str:name>/"
    assert attributes["after_response.outcome"] == "done"
    assert attributes["after_response.backlog_wait_ms"] >= 0
    children = [
        s for s in spans(server) if s["parent"] == span["span"] and s["name"].startswith("query ")
    ]
    assert sorted(s["name"] for s in children) == ["query 0", "query 1", "query 2"]
    assert {s["trace"] for s in children} == {ids["otel_trace"]}


def test_a_failed_calls_span_records_the_exception(observed):
    server, suffix = observed
    name = unique("span-fail")
    ids = get(server, f"/observed/fail{suffix}/{name}/")

    span = poll(
        lambda: call_span(server, ids, "failing_call"),
        WAIT,
        lambda: server.explain("no span for the failed call"),
    )
    assert span["status"] == "ERROR"
    assert "exception" in span["events"]
    assert span["attributes"]["after_response.outcome"] == "failed"
