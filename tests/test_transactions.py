"""Calls deferred inside transaction.atomic() wait for the commit; a rollback discards them."""

from __future__ import annotations

import dataclasses

import pytest
from django.db import connections, transaction
from django.test import Client

import after_response

from . import recorder

DATABASES = ["default", "other"]


def counts() -> dict[str, int]:
    return dataclasses.asdict(after_response.stats())


def delta(before: dict[str, int], key: str) -> int:
    return counts()[key] - before[key]


# Both kinds of test: with TestCase's own transaction around the test (it must not count), and
# with real commits (transaction=True).
transactional = pytest.mark.parametrize("db_marker", ["testcase", "transaction"], indirect=True)


@pytest.fixture
def db_marker(request: pytest.FixtureRequest) -> None:
    if request.param == "transaction":
        request.getfixturevalue("transactional_db")
    else:
        request.getfixturevalue("db")


@pytest.mark.django_db(databases=DATABASES)
@transactional
def test_commit_releases_and_rollback_discards(db_marker):
    before = counts()
    Client().get("/atomic/commit/")
    assert after_response.drain(recorder.WAIT)
    assert recorder.names() == ["committed", "always", "outside"]

    recorder.reset()
    Client().get("/atomic/rollback/")
    assert after_response.drain(recorder.WAIT)
    assert recorder.names() == ["always", "outside"]
    assert delta(before, "discarded") == 1
    assert delta(before, "done") == 5


@pytest.mark.django_db(databases=DATABASES)
@transactional
def test_atomic_requests(db_marker, settings):
    for alias in DATABASES:
        settings.DATABASES[alias]["ATOMIC_REQUESTS"] = True
        connections[alias].settings_dict["ATOMIC_REQUESTS"] = True
    try:
        Client().get("/atomic-request/ok/")
        assert after_response.drain(recorder.WAIT)
        assert recorder.names() == ["atomic-request", "error-report"]

        recorder.reset()
        response = Client(raise_request_exception=False).get("/atomic-request/raise/")
        assert response.status_code == 500
        assert after_response.drain(recorder.WAIT)
        # The view's transaction rolled back: only the call that asked to run anyway ran.
        assert recorder.names() == ["error-report"]
    finally:
        for alias in DATABASES:
            connections[alias].settings_dict["ATOMIC_REQUESTS"] = False


@pytest.mark.django_db(databases=DATABASES)
@transactional
def test_nested_savepoints(db_marker):
    before = counts()
    Client().get("/nested/")
    assert after_response.drain(recorder.WAIT)
    assert recorder.names() == ["inner-released", "outer"]
    assert delta(before, "discarded") == 1


@pytest.mark.django_db(databases=DATABASES)
@transactional
def test_two_databases(db_marker):
    Client().get("/two-databases/commit/")
    assert after_response.drain(recorder.WAIT)
    assert recorder.names() == ["both", "other-savepoint", "after"]

    recorder.reset()
    before = counts()
    Client().get("/two-databases/rollback-other/")
    assert after_response.drain(recorder.WAIT)
    # "other" rolled back while "default" committed: a call that waited on both is discarded.
    assert recorder.names() == ["after"]
    assert delta(before, "discarded") == 2


@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_transaction_still_open_when_the_response_is_sent():
    """The queue is handed off while the caller's transaction is open: calls wait for it."""
    before = counts()
    with transaction.atomic():
        Client().get("/atomic/commit/")  # the view's atomic block is a savepoint of ours
        assert after_response.drain(recorder.WAIT)
        assert recorder.names() == ["always"]
        assert delta(before, "waiting") == 2  # "committed" and "outside" wait for our commit
    assert sorted(recorder.wait_for(3)) == ["always", "committed", "outside"]

    recorder.reset()
    before = counts()
    with transaction.atomic():
        Client().get("/atomic/commit/")
        transaction.set_rollback(True)
    assert after_response.drain(recorder.WAIT)
    assert recorder.names() == ["always"]
    assert delta(before, "discarded") == 2
    assert delta(before, "waiting") == 0


@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_outside_a_request_waits_for_commit_too():
    before = counts()
    with transaction.atomic():
        after_response.defer(recorder.record, "committed")
        after_response.current_queue().add(recorder.record, ("always",), wait_for_commit=False)
        assert recorder.wait_for(1) == ["always"]
    assert recorder.wait_for(2) == ["always", "committed"]

    with transaction.atomic():
        after_response.defer(recorder.record, "rolled back")
        transaction.set_rollback(True)
    assert after_response.drain(recorder.WAIT)
    assert recorder.names() == ["always", "committed"]
    assert delta(before, "discarded") == 1


@pytest.mark.django_db
def test_outside_a_request_in_a_testcase_runs_with_on_commit_capture(
    django_capture_on_commit_callbacks,
):
    """Like transaction.on_commit() in a TestCase: run by captureOnCommitCallbacks."""
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        after_response.defer(recorder.record, "captured commit")
    assert recorder.wait_for(1) == ["captured commit"]


@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_counters_add_up():
    Client().get("/atomic/commit/")
    Client().get("/atomic/rollback/")
    Client().get("/failing/")
    Client().get("/cancel/")
    assert after_response.drain(recorder.WAIT)
    stats = after_response.stats()
    assert stats.waiting == 0 and stats.backlog == 0 and stats.running == 0
    assert stats.accepted == stats.settled
