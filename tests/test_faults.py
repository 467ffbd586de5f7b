"""Faults injected for real (issue 8): the database goes away, many small requests against a real
server, no state crossing requests.

The slow call, BaseException survival and the 100,000-call flood are in test_pool.py and
test_overload.py.

The database tests run against a private PostgreSQL cluster (tests/pgcluster.py) that they stop,
restart and cut connections on, reached through a database alias added for the test. They do not
touch pytest-django's test database: no ``django_db`` mark, the alias is unblocked on its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections, transaction
from django.test import RequestFactory, override_settings
from django.urls import clear_script_prefix

import after_response
from after_response import checks

from . import asgi, isolation, pgcluster, recorder
from .test_servers import SERVERS, Server

WAIT = recorder.WAIT  # seconds: the bound of every wait in this file
WORKERS = 3  # AFTER_RESPONSE_WORKERS of the database tests
POOL_TIMEOUT = 3.0  # seconds a thread waits for a pooled connection (psycopg's default: 30)
CONNECT_TIMEOUT = 3  # seconds
POOL_RECOVERY = 20.0  # seconds psycopg's pool may take to reconnect after an outage
POOLING = django.VERSION >= (5, 1)
NEEDS_POOLING = pytest.mark.skipif(not POOLING, reason="connection pools need Django 5.1+")


# -- the database goes away ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[pgcluster.Cluster]:
    try:
        made = pgcluster.Cluster.create()
    except pgcluster.Unavailable as exc:
        pytest.skip(f"no private PostgreSQL cluster can be made here: {exc}")
    try:
        yield made
    finally:
        made.destroy()


@contextlib.contextmanager
def private_database(
    cluster: pgcluster.Cluster,
    blocker: Any,
    name: str,
    **overrides: Any,
) -> Iterator[str]:
    """A database alias on the private cluster, and a fresh pool of WORKERS threads.

    Its sessions carry the alias as application_name, so the test can find and cut them. On the
    way out the pool is shut down (its threads close their connections as they end), the alias
    goes away and no session of it may remain.
    """
    alias = f"faults_{name}"
    cluster.clear_marks()
    options = {
        "application_name": alias,
        "connect_timeout": CONNECT_TIMEOUT,
        **overrides.pop("OPTIONS", {}),
    }
    database = cluster.settings(OPTIONS=options, **overrides)
    # The same dict as settings.DATABASES: a new alias, seen by threads started from now on.
    connections.settings[alias] = connections.configure_settings(
        {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], alias: database}
    )[alias]
    drained = False
    try:
        with (
            blocker.unblock(),
            override_settings(AFTER_RESPONSE_WORKERS=WORKERS, AFTER_RESPONSE_SLOW_CALL=None),
        ):
            try:
                yield alias
            finally:
                drained = after_response.shutdown(WAIT)
    finally:
        connections[alias].close()
        if POOLING:
            connections[alias].close_pool()
        del connections[alias]
        del connections.settings[alias]
    assert drained, "the pool did not drain"
    if cluster.running:
        cluster.wait_for_backends(alias, 0, WAIT)  # no connection outlived its worker thread


def write_mark(alias: str, name: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("INSERT INTO marks (name, backend) VALUES (%s, pg_backend_pid())", [name])


def write_mark_together(alias: str, name: str, together: threading.Barrier) -> None:
    write_mark(alias, name)
    together.wait()  # every worker holds a connection at the same time


def sleep_in_database(alias: str, name: str, in_transaction: bool) -> None:
    """Writes, then holds its connection in a query until the test cuts it (or WAIT passes)."""
    with transaction.atomic(using=alias) if in_transaction else contextlib.nullcontext():
        write_mark(alias, name)
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_sleep(%s)", [WAIT])


class Faults:
    """Drives one alias through the faults and keeps the expected counters."""

    def __init__(self, cluster: pgcluster.Cluster, alias: str, config: str, caplog: Any) -> None:
        self.cluster = cluster
        self.alias = alias
        self.config = config
        self.caplog = caplog
        self.done = 0
        self.failed = 0
        self.names: set[str] = set()  # the marks the calls that succeeded wrote

    def check_counters(self) -> None:
        stats = after_response.stats()
        assert (stats.done, stats.failed) == (self.done, self.failed), stats
        assert stats.accepted == stats.done + stats.failed, stats
        assert stats.workers == WORKERS, stats  # no worker died

    def every_worker_writes(self, label: str, *, together: bool = True) -> dict[str, int]:
        """One call per worker, all holding a connection at once (``together``), or twice as
        many calls that need not; all must succeed."""
        if together:
            barrier = threading.Barrier(WORKERS, timeout=WAIT)
            names = [f"{label}-{i}" for i in range(WORKERS)]
            for name in names:
                after_response.defer(write_mark_together, self.alias, name, barrier)
        else:
            names = [f"{label}-{i}" for i in range(2 * WORKERS)]
            for name in names:
                after_response.defer(write_mark, self.alias, name)
        assert after_response.drain(WAIT)
        self.done += len(names)
        self.names.update(names)
        marks = self.cluster.marks()
        assert set(names) <= marks.keys(), self.failures()
        self.check_counters()
        self.check_sessions()
        return {name: marks[name] for name in names}

    def check_sessions(self) -> None:
        """Between calls: no session with CONN_MAX_AGE = 0, one per worker when persistent,
        and every pooled connection back in the pool."""
        if self.config == "conn_max_age_0":
            self.cluster.wait_for_backends(self.alias, 0, WAIT)
        elif self.config == "persistent_with_health_checks":
            self.cluster.wait_for_backends(self.alias, WORKERS, WAIT)
        else:
            wait_until_returned(self.alias)

    def sleeping_calls_are_cut(self, label: str, cut: Any) -> None:
        """One call per worker, in a query when ``cut()`` runs: each fails and is logged."""
        logged = len(self.failures())
        names = [f"{label}-{i}" for i in range(WORKERS)]
        for number, name in enumerate(names):
            after_response.defer(sleep_in_database, self.alias, name, number % 2 == 1)
        self.cluster.wait_for_backends(self.alias, WORKERS, WAIT, wait_event="PgSleep")
        cut()
        assert after_response.drain(WAIT)
        self.failed += WORKERS
        self.check_counters()
        failures = self.failures()[logged:]
        assert len(failures) == WORKERS, failures
        for record in failures:
            assert record.getMessage() == (
                "Deferred call tests.test_faults.sleep_in_database failed (request: no request)"
            )
            assert record.exc_info is not None and record.exc_info[0] is OperationalError
        # What a call wrote in its transaction was rolled back; the others had committed.
        written = self.cluster.marks().keys()
        assert [name in written for name in names] == [n % 2 == 0 for n in range(WORKERS)]
        self.names.update(name for name in names if name in written)

    def failures(self) -> list[logging.LogRecord]:
        return [
            record
            for record in self.caplog.records
            if record.name == "after_response" and "failed (request:" in record.getMessage()
        ]


DATABASE_SETTINGS = {
    "conn_max_age_0": {},
    "persistent_with_health_checks": {"CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True},
    "psycopg_pool": {
        "CONN_HEALTH_CHECKS": True,  # the pool checks a connection before it lends it
        "OPTIONS": {"pool": {"min_size": 1, "max_size": WORKERS + 1, "timeout": POOL_TIMEOUT}},
    },
}


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("config", list(DATABASE_SETTINGS))
def test_the_database_goes_away(cluster, django_db_blocker, caplog, config):
    if "OPTIONS" in DATABASE_SETTINGS[config] and not POOLING:
        pytest.skip("connection pools need Django 5.1+")
    with private_database(cluster, django_db_blocker, config, **DATABASE_SETTINGS[config]) as alias:
        faults = Faults(cluster, alias, config, caplog)
        first = faults.every_worker_writes("first")

        # Between calls: every session of ours is cut (persistent and pooled connections).
        cut = cluster.terminate(alias)
        if config == "persistent_with_health_checks":
            assert sorted(cut) == sorted(first.values())  # each worker kept its connection
        again = faults.every_worker_writes("after-cut")
        assert not set(again.values()) & set(cut)  # fresh connections

        # During calls: the running queries are cut, in and out of a transaction.
        faults.sleeping_calls_are_cut("cut-while-running", lambda: cluster.terminate(alias))
        faults.every_worker_writes("after-cut-while-running")

        # The server restarts while calls run (a fast stop ends their sessions).
        faults.sleeping_calls_are_cut("restarted-while-running", cluster.restart)
        faults.every_worker_writes("after-restart")

        # The server is down: the calls made meanwhile fail, within the connect timeout (or
        # the pool's), and the next ones succeed once it is back.
        logged = len(faults.failures())
        cluster.stop()
        try:
            for number in range(WORKERS):
                after_response.defer(write_mark, alias, f"while-down-{number}")
            assert after_response.drain(WAIT)
        finally:
            cluster.start()
        faults.failed += WORKERS
        faults.check_counters()
        assert len(faults.failures()) == logged + WORKERS
        # Direct connections are back at once. psycopg's pool reconnects with a backoff (1 s,
        # 2 s, 4 s...) and grows one connection at a time, so for a while after an outage calls
        # and requests alike share what it has, or wait for it up to its timeout.
        pooled = "OPTIONS" in DATABASE_SETTINGS[config]
        wait_until_serving(alias, POOL_RECOVERY if pooled else CONNECT_TIMEOUT)
        faults.every_worker_writes("after-down", together=not pooled)

        assert cluster.marks().keys() == faults.names  # each call that succeeded wrote once


class Holding:
    """How many calls hold a pooled connection right now, and the most there ever were."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.now = 0
        self.peak = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self.condition:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.condition.notify_all()
        try:
            yield
        finally:
            with self.condition:
                self.now -= 1

    def wait_for(self, count: int) -> None:
        with self.condition:
            assert self.condition.wait_for(lambda: self.now == count, WAIT), self.now


def hold_connection(alias: str, name: str, holding: Holding, release: threading.Event) -> None:
    write_mark(alias, name)  # takes a connection from the pool, for the rest of the call
    with holding.held():
        release.wait(WAIT)
    write_mark(alias, f"{name}/again")  # fails if the test cut the connection meanwhile


def query_from_a_request_thread(alias: str) -> float | Exception:
    """What a request thread of the server meets: seconds to get a connection, or the error."""
    result: list[float | Exception] = []

    def request() -> None:
        started = time.monotonic()
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
            result.append(time.monotonic() - started)
        except Exception as exc:
            result.append(exc)
        finally:
            connections[alias].close()  # back to the pool, as at the end of a request

    thread = threading.Thread(target=request)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive() and result, "the request thread never got an answer"
    return result[0]


def wait_until_serving(alias: str, timeout: float) -> float:
    """Seconds until a request thread gets a connection again; fail after ``timeout``."""
    started = time.monotonic()
    while not isinstance(outcome := query_from_a_request_thread(alias), float):
        assert time.monotonic() - started < timeout, f"no connection after {timeout} s: {outcome}"
    return time.monotonic() - started


def in_use(alias: str) -> int:
    """Connections the pool has lent out (or is opening) and not got back."""
    stats = connections[alias].pool.get_stats()
    return int(stats["pool_size"] - stats["pool_available"])


def wait_until_returned(alias: str) -> None:
    """Until the pool has got every connection back (a thread returns its own on its time)."""
    lent = recorder.settled(lambda: in_use(alias), lambda count: count == 0)
    assert lent == 0, connections[alias].pool.get_stats()


def pool_settings(max_size: int, timeout: float = POOL_TIMEOUT) -> dict[str, Any]:
    return {
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"pool": {"min_size": 1, "max_size": max_size, "timeout": timeout}},
    }


@pytest.mark.slow
@NEEDS_POOLING
@pytest.mark.timeout(60)
def test_busy_workers_leave_pooled_connections_to_requests(cluster, django_db_blocker, caplog):
    """max_size = AFTER_RESPONSE_WORKERS + 1, and four times that many calls at once, each
    holding its connection: the workers hold at most one each, a request still gets one at
    once, connections cut under them fail only their own calls, and all come back."""
    max_size = WORKERS + 1
    calls = 4 * max_size
    with private_database(
        cluster, django_db_blocker, "pool_sizing", **pool_settings(max_size)
    ) as alias:
        holding = Holding()
        release = threading.Event()
        for number in range(calls):  # one call per request
            after_response.defer(hold_connection, alias, f"held-{number}", holding, release)
        holding.wait_for(WORKERS)  # every worker holds a connection; the other calls queue
        assert after_response.stats().backlog == calls - WORKERS

        waited = query_from_a_request_thread(alias)
        assert isinstance(waited, float) and waited < POOL_TIMEOUT / 2, waited

        cut = cluster.terminate(alias)
        assert len(cut) >= WORKERS
        release.set()
        assert after_response.drain(WAIT)
        stats = after_response.stats()
        assert (stats.done, stats.failed, stats.workers) == (calls - WORKERS, WORKERS, WORKERS)
        assert holding.peak == WORKERS
        wait_until_returned(alias)  # no connection leaked by a call, failed or not
        assert "requests_errors" not in connections[alias].pool.get_stats()  # no getconn timed out
        assert isinstance(query_from_a_request_thread(alias), float)


@pytest.mark.slow
@NEEDS_POOLING
@pytest.mark.timeout(60)
def test_a_pool_no_larger_than_the_worker_count_starves_requests(cluster, django_db_blocker):
    """Why max_size must exceed AFTER_RESPONSE_WORKERS: with max_size == WORKERS, busy workers
    hold every connection and a request waits out the pool's timeout."""
    settings = pool_settings(WORKERS, timeout=1.0)
    with private_database(cluster, django_db_blocker, "pool_starved", **settings) as alias:
        holding = Holding()
        release = threading.Event()
        for number in range(WORKERS):
            after_response.defer(hold_connection, alias, f"starving-{number}", holding, release)
        try:
            holding.wait_for(WORKERS)
            assert isinstance(query_from_a_request_thread(alias), OperationalError)
        finally:
            release.set()
        assert after_response.drain(WAIT)
        assert after_response.stats().done == WORKERS


@NEEDS_POOLING
def test_the_check_reports_a_pool_no_larger_than_the_worker_count():
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "unused",
        "OPTIONS": {"pool": {"min_size": 1, "max_size": WORKERS}},
    }
    alias = "faults_check"
    connections.settings[alias] = connections.configure_settings(
        {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], alias: database}
    )[alias]
    try:
        with override_settings(AFTER_RESPONSE_WORKERS=WORKERS):
            found = [message.id for message in checks.check_connection_pools()]
    finally:
        del connections.settings[alias]
    assert "after_response.W002" in found


# -- many small requests against a real server ------------------------------------------------

CLIENTS = 16  # client threads
REQUESTS_PER_CLIENT = 30
FAIL_EVERY = 10  # every tenth request defers a call that raises
FAILED_LINE = re.compile(
    r"Deferred call tests\.e2e\.tally\.tallied failed \(request: GET tally/<str:name>/\)"
)
DROPPED_LINE = re.compile(r"Dropped (\d+) deferred call\(s\) because the backlog is full")


@pytest.mark.slow
@pytest.mark.servers
@pytest.mark.timeout(120)
def test_every_call_of_many_small_requests_is_accounted_for(tmp_path: Path) -> None:
    """gunicorn gthread, two worker processes, two calls of backlog each, dropping when full:
    accepted == done + failed + dropped in every process, and summed over both it is every
    request the clients sent. The log and the calls' own output agree with the counters."""
    tally = tmp_path / "tally"
    tally.mkdir()
    kind = "gunicorn-gthread"
    server = Server(
        kind,
        SERVERS[kind],
        tmp_path / "server.log",
        {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "unused.sqlite3")},
        DJANGO_SETTINGS_MODULE="tests.e2e.tally_settings",
        AFTER_RESPONSE_E2E_TALLY_DIR=str(tally),
    )

    def client(number: int) -> list[tuple[str, bool, int]]:
        sent = []
        with server.client() as http:
            for request in range(REQUESTS_PER_CLIENT):
                name, fail = f"{number}-{request}", request % FAIL_EVERY == 0
                response = http.get(f"/tally/{name}/", params={"fail": int(fail)})
                sent.append((name, fail, response.status_code))
        return sent

    try:
        server.wait_until_ready()
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as clients:
            sent = [item for part in clients.map(client, range(CLIENTS)) for item in part]
    finally:
        killed = server.stop()  # each worker process drains and writes its stats as it exits
    assert not killed, server.explain(f"had to SIGKILL {killed}")
    assert {status for _, _, status in sent} == {200}, server.explain("a request failed")

    per_process = {
        int(path.stem.removeprefix("stats-")): json.loads(path.read_text())
        for path in tally.glob("stats-*.json")
    }
    assert per_process.keys() == set(server.worker_pids), server.explain("stats missing")
    for pid, stats in per_process.items():
        assert stats["pid"] == pid
        assert stats["accepted"] == stats["done"] + stats["failed"] + stats["dropped"], stats
        left = {key: stats[key] for key in ("waiting", "backlog", "running", "handoff_errors")}
        assert left == dict.fromkeys(left, 0), stats
        assert stats["cancelled"] == stats["discarded"] == 0, stats

    total = {
        key: sum(stats[key] for stats in per_process.values())
        for key in ("accepted", "done", "failed", "dropped")
    }
    assert total["accepted"] == len(sent) == CLIENTS * REQUESTS_PER_CLIENT
    assert total["dropped"] > 0 and total["done"] > 0, total  # the small backlog did overflow

    done = [line for path in tally.glob("done-*.txt") for line in path.read_text().split()]
    assert len(done) == len(set(done)) == total["done"]  # each counted call ran, once
    succeeding = {name for name, fail, _ in sent if not fail}
    assert set(done) <= succeeding
    log = server.log()
    assert len(FAILED_LINE.findall(log)) == total["failed"] <= len(sent) - len(succeeding)
    assert sum(int(count) for count in DROPPED_LINE.findall(log)) == total["dropped"]
    assert log.count("Traceback") == total["failed"], server.explain("an unexpected error")


# -- no state crosses requests ---------------------------------------------------------------

ISOLATION_MIDDLEWARE = [
    "after_response.middleware.AfterResponseMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "tests.isolation.PerRequestState",
]
REQUESTS = {  # user: (language, time zone, site)
    "alice": ("fr", "Europe/Paris", "a"),
    "bob": ("de", "Asia/Tokyo", "b"),
}
ROUNDS = 3


def headers(user: str) -> dict[str, str]:
    language, zone, site = REQUESTS[user]
    return {
        "Accept-Language": language,
        "X-User": user,
        "X-Timezone": zone,
        "X-Urlconf": f"tests.isolation_urls_{site}",
    }


def wsgi_request(handler: WSGIHandler, user: str) -> bytes:
    """One GET through Django's WSGIHandler, closing the response as a WSGI server does."""
    environ = RequestFactory().get("/isolated/", headers=headers(user)).environ
    statuses: list[str] = []
    result = handler(environ, lambda status, _: statuses.append(status))
    try:
        body = b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]
        clear_script_prefix()
    assert statuses == ["200 OK"], statuses
    return body


async def asgi_requests() -> list[bytes]:
    isolation.async_rendezvous = asyncio.Barrier(len(REQUESTS))
    handler = ASGIHandler()
    sent = await asyncio.gather(
        *(
            asgi.request(
                "/isolated-async/",
                headers=[
                    (key.lower().encode(), value.encode()) for key, value in headers(user).items()
                ],
                app=handler,
            )
            for user in REQUESTS
        )
    )
    return [b"".join(m.get("body", b"") for m in messages) for messages in sent]


@pytest.mark.parametrize("handler", ["wsgi", "asgi"])
@pytest.mark.parametrize("workers", [1, 2])
def test_no_state_crosses_requests(handler, workers):
    """Two requests at once, with their own language, time zone, user and urlconf: each deferred
    call sees its own request's language, time zone, urlconf and context variable (carried),
    nothing of its asgiref Local (thread-local), whatever the call that ran before it on the
    same worker thread left behind."""
    with override_settings(MIDDLEWARE=ISOLATION_MIDDLEWARE, AFTER_RESPONSE_WORKERS=workers):
        for _ in range(ROUNDS):
            recorder.reset()
            if handler == "wsgi":
                isolation.rendezvous = threading.Barrier(len(REQUESTS), timeout=WAIT)
                wsgi = WSGIHandler()
                with concurrent.futures.ThreadPoolExecutor(len(REQUESTS)) as threads:
                    bodies = list(threads.map(wsgi_request, [wsgi] * len(REQUESTS), REQUESTS))
            else:
                bodies = asyncio.run(asgi_requests())
            assert bodies == [user.encode() for user in REQUESTS]
            assert after_response.drain(WAIT)
            recorder.wait_for(len(REQUESTS))
            seen = dict(recorder.calls)
            for user, (language, zone, site) in REQUESTS.items():
                assert seen[user] == {
                    "language": language,
                    "timezone": zone,
                    "urlconf": f"tests.isolation_urls_{site}",
                    "where": f"/{site}/where/",
                    "user": user,
                    "user_local": None,
                }, (user, seen)
