"""Connection hygiene in the worker threads, on the real database (transaction=True: the
workers use their own connections and must see committed rows)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.test import Client, override_settings

import after_response

from . import recorder
from .models import Record


@pytest.mark.django_db(transaction=True)
def test_deferred_orm_writes_land():
    for i in range(20):
        Client().get(f"/write/row-{i}/")
    assert after_response.drain(recorder.WAIT)
    assert Record.objects.filter(name__startswith="row-").count() == 20


@pytest.mark.django_db(transaction=True)
def test_no_connection_outlives_a_call_with_conn_max_age_0():
    used: list[object] = []

    def query() -> None:
        Record.objects.count()
        wrapper = connections["default"]
        recorder.record("open during the call", wrapper.connection is not None)
        used.append(wrapper)

    after_response.defer(query)
    assert after_response.drain(recorder.WAIT)
    assert recorder.calls == [("open during the call", True)]
    assert used[0].connection is None  # type: ignore[attr-defined]  # closed right after


@pytest.mark.django_db(transaction=True)
def test_a_persistent_connection_is_reused_but_checked(settings):
    connections["default"].settings_dict["CONN_MAX_AGE"] = 60
    try:
        ids: list[int] = []

        def remember_connection() -> None:
            Record.objects.count()
            ids.append(id(connections["default"].connection))

        with override_settings(AFTER_RESPONSE_WORKERS=1):
            for _ in range(3):
                after_response.defer(remember_connection)
            assert after_response.drain(recorder.WAIT)
        assert len(ids) == 3 and len(set(ids)) == 1  # kept between calls, like between requests
    finally:
        connections["default"].settings_dict["CONN_MAX_AGE"] = 0


@pytest.mark.django_db(transaction=True)
def test_worker_threads_close_their_connections_when_they_end():
    from after_response import runtime

    connections["default"].settings_dict["CONN_MAX_AGE"] = 60
    seen: list[object] = []
    try:
        with override_settings(AFTER_RESPONSE_WORKERS=2):
            pool = runtime.get_pool()

            def hold_connection() -> None:
                Record.objects.count()
                seen.append(connections["default"])

            for _ in range(4):
                after_response.defer(hold_connection)
            assert after_response.drain(recorder.WAIT)
            assert any(c.connection is not None for c in seen)  # type: ignore[attr-defined]
            assert pool.shutdown(recorder.WAIT)
        assert all(c.connection is None for c in seen)  # type: ignore[attr-defined]
    finally:
        connections["default"].settings_dict["CONN_MAX_AGE"] = 0


@pytest.mark.django_db(transaction=True)
def test_postgres_backends_return_to_baseline():
    if connection.vendor != "postgresql":
        pytest.skip("pg_stat_activity is PostgreSQL's")
    baseline = recorder.backends()
    together = threading.Barrier(5, timeout=recorder.WAIT)

    def query_together() -> None:
        Record.objects.create(name="pg")
        together.wait()  # all four workers hold a connection at the same time...
        together.wait()  # ...until the test has seen them

    for _ in range(4):
        Client().get("/defer-two/")  # warm requests through the middleware too
        after_response.defer(query_together)
    together.wait()
    connected = recorder.backends() - baseline
    together.wait()
    assert after_response.drain(recorder.WAIT)
    assert Record.objects.filter(name="pg").count() == 4
    assert len(connected) == 4, connected  # the query sees the workers' backends
    # Each worker closed its connection before drain() returned; PostgreSQL ends the backend
    # shortly after, on its own time.
    assert recorder.backends_left(baseline) == set()
