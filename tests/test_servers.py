"""End to end: real gunicorn (sync, gthread) and uvicorn servers, two worker processes each.

Each server runs the project in tests/e2e/ as a subprocess on 127.0.0.1, on a port the kernel
picks (port 0, read back from the server's log), against the database pytest-django created for
this run. The tests talk to it over HTTP with httpx and watch the database for what the deferred
calls did. Every wait is a bounded poll; every server is stopped by PID when its tests are done.

``transaction=True``: the servers write through their own connections, so the test must see
committed rows and must not hold its data in a transaction the servers cannot see.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from after_response import lifecycle
from tests.e2e.views import BODY
from tests.models import Record
from tests.servers import (
    POSTGRES,
    PROBLEM,
    WAIT,
    WORKER_PROCESSES,
    Server,
    poll,
    row,
    server_backends,
    server_database,
    unique,
)

pytestmark = [
    pytest.mark.servers,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(90),
]

WSGI_APP = "django.core.wsgi:get_wsgi_application()"
ASGI_APP = "django.core.asgi:get_asgi_application"  # a factory: uvicorn --factory
GUNICORN = [
    "-m",
    "gunicorn",
    "--bind",
    "127.0.0.1:0",
    "--workers",
    str(WORKER_PROCESSES),
    "--graceful-timeout",
    "10",
    "--no-control-socket",  # its default path is shared by every gunicorn of this user
    "--access-logfile",
    "-",
]
SERVERS = {
    "gunicorn-sync": [*GUNICORN, "--worker-class", "sync", WSGI_APP],
    "gunicorn-gthread": [*GUNICORN, "--worker-class", "gthread", "--threads", "4", WSGI_APP],
    "uvicorn": [
        "-m",
        "uvicorn",
        "--factory",
        ASGI_APP,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--workers",
        str(WORKER_PROCESSES),
        "--timeout-graceful-shutdown",
        "10",
    ],
}
# Django's own ASGI application under uvicorn, without the library's wrapper: each worker process
# logs, as its pool starts, that it cannot drain at a stop (the one error these servers expect).
REPORTED = {"uvicorn": lifecycle.NO_EXIT_HOOK_MESSAGE}
# Stopped with SIGTERM while deferred calls work. uvicorn runs no exit hook: only the library's
# ASGI wrapper, on the lifespan shutdown, can drain there (README, "Servers").
DRAINING = {
    "gunicorn-sync": SERVERS["gunicorn-sync"],
    "gunicorn-gthread": SERVERS["gunicorn-gthread"],
    "uvicorn-lifespan": [
        "after_response.asgi:get_asgi_application" if part == ASGI_APP else part
        for part in SERVERS["uvicorn"]
    ],
}

# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=list(SERVERS))
def server(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    kind = request.param
    log_path = tmp_path_factory.mktemp(kind) / "server.log"
    started = Server(kind, SERVERS[kind], log_path, server_database(kind))
    try:
        started.wait_until_ready()
        yield started
    finally:
        killed = started.stop()
    assert not killed, started.explain(f"had to SIGKILL {killed}: SIGTERM did not stop them")
    # The whole log, now that every process has exited: a line written after a test's own
    # check (a call failing late) is caught here.
    assert not problems(started), started.explain("the server logged an error")
    if kind in REPORTED:
        assert REPORTED[kind] in started.log(), started.explain("the problem was not reported")


# Django logs the 4xx and 5xx responses that
# test_a_call_held_for_success_follows_the_status_sent asks for.
EXPECTED_ERROR_RESPONSE = re.compile(r"django\.request: .* /on-success/")


def problems(server: Server, since: int = 0) -> list[str]:
    """The lines of the log that show an error, but the one the server is expected to report."""
    expected = REPORTED.get(server.kind)
    return [
        line
        for line in server.log()[since:].splitlines()
        if PROBLEM.search(line)
        and not (expected and expected in line)
        and not EXPECTED_ERROR_RESPONSE.search(line)
    ]


@pytest.fixture
def log_offset(server: Server) -> Iterator[int]:
    """Where this test's part of the server log starts; it must show no error (but the one
    its server is expected to report)."""
    offset = len(server.log())
    yield offset
    assert not problems(server, offset), server.explain("the server logged an error", offset)


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "framing"),
    [("slow", "content-length"), ("slow-stream", "transfer-encoding")],
    ids=["content-length", "chunked"],
)
def test_whole_response_arrives_before_the_deferred_call_finishes(
    server: Server, log_offset: int, path: str, framing: str
) -> None:
    # Each call works until the test writes its go-ahead row, after it has read the responses
    # and probed the server: what the test sees does not depend on how loaded the machine is.
    # A server that held a response back for its call, or ran the calls inside close() before
    # it closed the socket, would not answer (the calls hold up both sync workers) until the
    # calls gave up (CALL_HOLD_LIMIT, longer than a request's timeout) and failed.
    names = [unique(path) for _ in range(WORKER_PROCESSES)]
    served = []
    with server.client() as client:
        for name in names:
            response = client.get(f"/{path}/{name}/")
            received = time.time()  # the whole body has been read
            assert response.status_code == 200, server.explain(response.text, since=log_offset)
            assert framing in response.headers
            assert response.content == BODY
            served.append((name, response, received))
        for name in names:
            poll(
                lambda n=name: row(f"{n}/started"),
                WAIT,
                lambda n=name: server.explain(f"the call {n} never started", since=log_offset),
            )
        for _ in range(2 * WORKER_PROCESSES):  # answered while both calls are at work
            assert client.get("/ready/").status_code == 200
    assert [row(name) for name in names] == [None] * len(names)  # none can end before its go

    go_ahead = time.time()
    for name in names:
        Record.objects.create(name=f"{name}/go")
    for name, response, received in served:
        marker = poll(
            lambda n=name: row(n),
            WAIT,
            lambda n=name: server.explain(f"the deferred call never wrote {n}", since=log_offset),
        )
        done = json.loads(marker.value)
        assert done["pid"] == int(response.headers["x-pid"]), "not run where it was deferred"
        assert float(response.headers["x-deferred-at"]) <= done["started"]
        assert received < go_ahead < done["finished"]


def test_streamed_response_hands_off_after_its_last_chunk(server: Server, log_offset: int) -> None:
    name = unique("held")
    with server.client() as client, client.stream("GET", f"/held-stream/{name}/") as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        first = next(chunks)  # the view's iterator now waits for the go-ahead row
        assert row(f"{name}/started") is None, "the call started while its response streamed"
        go_ahead = time.time()
        Record.objects.create(name=f"{name}/go")
        body = first + b"".join(chunks)
    assert body == BODY

    marker = poll(
        lambda: row(name),
        WAIT,
        lambda: server.explain(f"the deferred call never wrote {name}", since=log_offset),
    )
    # Deterministic, unlike a check that something has not happened yet: the call cannot have
    # started before the row that let the stream finish existed.
    assert json.loads(marker.value)["started"] > go_ahead


def test_deferred_orm_writes_land_in_the_database(server: Server, log_offset: int) -> None:
    # Sync views defer a function, async views a coroutine function (Manager.acreate).
    names = {unique(kind): path for kind, path in [("sync", "write"), ("async", "async-write")] * 3}

    def get(name: str) -> httpx.Response:
        with server.client() as client:  # one per thread: httpx.Client is not shared
            return client.get(f"/{names[name]}/{name}/")

    with concurrent.futures.ThreadPoolExecutor(3) as requests:
        responses = requests.map(get, names)
        for name, response in zip(names, responses, strict=True):
            assert (response.status_code, response.text) == (200, name), server.explain(
                response.text, since=log_offset
            )

    def all_written() -> list[Record] | None:
        rows = list(Record.objects.filter(name__in=names))
        return rows if len(rows) >= len(names) else None

    rows = poll(
        all_written,
        WAIT,
        lambda: server.explain(
            f"written: {sorted(Record.objects.values_list('name', flat=True))}, "
            f"expected: {sorted(names)}",
            since=log_offset,
        ),
    )
    assert sorted(r.name for r in rows) == sorted(names)  # each call ran exactly once
    assert {int(r.value) for r in rows} <= set(server.worker_pids)


@pytest.mark.parametrize(("status", "held_runs"), [(200, True), (422, False), (503, False)])
def test_a_call_held_for_success_follows_the_status_sent(
    server: Server, log_offset: int, status: int, held_runs: bool
) -> None:
    name = unique(f"on-success-{status}")
    with server.client() as client:
        response = client.get(f"/on-success/{status}/{name}/")
    assert response.status_code == status, server.explain(response.text, since=log_offset)
    poll(lambda: row(f"{name}/marker"), WAIT, lambda: server.explain("no marker", since=log_offset))
    # The marker was deferred after the held call, and a request's calls run in order.
    assert (row(f"{name}/held") is not None) is held_runs


@pytest.mark.skipif(
    not POSTGRES, reason="pg_stat_activity is PostgreSQL's: SQLite has no backends to count"
)
def test_database_connections_return_to_the_baseline(server: Server, log_offset: int) -> None:
    # Sessions are told apart by (pid, backend_start): a backend of an earlier test may still be
    # ending when the baseline is taken (PostgreSQL ends it shortly after its client closed the
    # connection), so the baseline is a set, not a count.
    baseline = {(pid, started) for pid, _, started, _ in server_backends(server)}

    def new_backends() -> list[tuple[Any, ...]]:
        return [row for row in server_backends(server) if (row[0], row[2]) not in baseline]

    slow, writes = unique("slow"), [unique("sync"), unique("async")]
    with server.client() as client:
        assert client.get(f"/slow/{slow}/").status_code == 200
        assert client.get(f"/write/{writes[0]}/").status_code == 200
        assert client.get(f"/async-write/{writes[1]}/").status_code == 200

    # The slow call holds a connection until its go-ahead: the query sees the server's backends.
    poll(
        new_backends,
        WAIT,
        lambda: server.explain(f"no backend besides the baseline {baseline}", since=log_offset),
    )
    Record.objects.create(name=f"{slow}/go")
    for name in [slow, *writes]:
        poll(lambda n=name: row(n), WAIT, lambda n=name: server.explain(f"{n} never written"))

    # Each call closes its connections when it ends (CONN_MAX_AGE = 0), in every worker thread:
    # a worker thread that kept its connection would keep its backend. PostgreSQL ends a backend
    # shortly after its client closed the connection: poll, bounded.
    poll(
        lambda: not new_backends(),
        WAIT,
        lambda: server.explain(
            f"backends still connected besides the baseline: {new_backends()}", since=log_offset
        ),
    )


@pytest.mark.parametrize("kind", DRAINING)
def test_sigterm_lets_the_calls_in_flight_finish(kind: str, tmp_path: Path) -> None:
    server = Server(kind, DRAINING[kind], tmp_path / "server.log", server_database(kind))
    names = [unique("drained") for _ in range(WORKER_PROCESSES)]
    signalled = False
    try:
        server.wait_until_ready()
        with server.client() as client:
            for name in names:
                response = client.get(f"/slow/{name}/")
                assert response.status_code == 200, server.explain(response.text)
        poll(
            lambda: all(row(f"{name}/started") for name in names),
            WAIT,
            lambda: server.explain("the calls never started"),
        )
        # The calls work until their go-ahead, which comes after SIGTERM: at the signal they
        # are in flight, however long the machine took to get here.
        server.send_stop_signal()
        signalled = True
        for name in names:
            Record.objects.create(name=f"{name}/go")
    finally:
        # The wait for every process of the server to end (after SIGTERM, if the test failed
        # before it sent it).
        killed = server.wait_for_exit() if signalled else server.stop()
    assert not killed, server.explain(f"had to SIGKILL {killed}: SIGTERM did not stop them")
    # Every process has exited: what the calls did not write by now, they never will.
    assert all(row(name) for name in names), server.explain("calls lost at shutdown")
    assert not problems(server), server.explain("the server logged an error")


def test_immediate_mode_under_uvicorn(tmp_path: Path) -> None:
    """AFTER_RESPONSE_IMMEDIATE under a real ASGI server: calls run inline when the response
    closes, in the request's thread-sensitive thread, for sync and async views alike."""
    kind = "uvicorn"
    server = Server(
        kind,
        SERVERS[kind],
        tmp_path / "server.log",
        server_database(kind),
        AFTER_RESPONSE_E2E_IMMEDIATE="1",
    )
    names = [unique("sync"), unique("async")]
    try:
        server.wait_until_ready()
        with server.client() as client:
            for name, path in zip(names, ["write", "async-write"], strict=True):
                assert client.get(f"/{path}/{name}/").status_code == 200, server.explain(path)
        poll(
            lambda: all(row(name) for name in names),
            WAIT,
            lambda: server.explain("immediate calls never ran"),
        )
    finally:
        killed = server.stop()
    assert not killed, server.explain(f"had to SIGKILL {killed}: SIGTERM did not stop them")
