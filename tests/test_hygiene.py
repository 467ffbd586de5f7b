"""A unit of work never poisons the next one in its thread: a transaction it left open (an atomic
block entered and never exited, autocommit turned off) is rolled back after it, and named.

transaction=True: the work runs in worker threads on their own connections, and the test must
see what they committed (and not see what was rolled back).
"""

from __future__ import annotations

import pytest
from django.db import connections, transaction
from django.test import override_settings

import after_response
from after_response import threads

from . import recorder
from .models import Record

DATABASES = ["default", "other"]
WAIT = recorder.WAIT


def leave_atomic_open(using: str) -> None:
    transaction.atomic(using=using).__enter__()
    Record.objects.using(using).create(name="rolled back")
    transaction.on_commit(lambda: recorder.record("on_commit ran"), using=using)
    after_response.defer(recorder.record, "deferred inside")  # waits for a commit never made


def leave_nested_atomic_open(using: str) -> None:
    transaction.atomic(using=using).__enter__()
    Record.objects.using(using).create(name="rolled back")
    transaction.atomic(using=using).__enter__()  # a savepoint
    Record.objects.using(using).create(name="rolled back")


def leave_atomic_open_and_closed(using: str) -> None:
    transaction.atomic(using=using).__enter__()
    Record.objects.using(using).create(name="rolled back")
    connections[using].close()  # inside the block: Django keeps the wrapper "in" it


def leave_autocommit_off(using: str) -> None:
    transaction.set_autocommit(False, using=using)
    Record.objects.using(using).create(name="rolled back")


def write(using: str) -> None:
    Record.objects.using(using).create(name="committed")
    recorder.record("written")


LEAKS = pytest.mark.parametrize(
    ("leak", "left"),
    [
        (leave_atomic_open, "an atomic block open"),
        (leave_nested_atomic_open, "an atomic block open"),
        (leave_atomic_open_and_closed, "an atomic block open"),
        (leave_autocommit_off, "autocommit off"),
    ],
)


def names(using: str) -> list[str]:
    return sorted(Record.objects.using(using).values_list("name", flat=True))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "after_response" and r.levelname == "WARNING"
    ]


@LEAKS
@pytest.mark.parametrize("using", DATABASES)
@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_the_next_call_on_a_pool_worker_starts_clean(leak, left, using, caplog):
    with override_settings(AFTER_RESPONSE_WORKERS=1):  # both calls on one worker thread
        after_response.defer(leak, using)
        after_response.defer(write, using)
        assert after_response.drain(WAIT)
    assert recorder.names() == ["written"]  # neither on_commit nor the gated call ran
    assert names(using) == ["committed"]
    [warning] = warnings(caplog)
    assert f"left {left} on the {using!r} database" in warning


@pytest.mark.django_db(transaction=True)
def test_the_warning_names_the_call_that_left_it(caplog):
    with override_settings(AFTER_RESPONSE_WORKERS=1):
        after_response.defer(leave_atomic_open, "default")
        assert after_response.drain(WAIT)
    [warning] = warnings(caplog)
    assert warning.startswith("tests.test_hygiene.leave_atomic_open left an atomic block open")


@LEAKS
@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_the_next_job_on_a_pool_thread_starts_clean(leak, left, caplog):
    with threads.ThreadPoolExecutor(1) as pool:
        first = pool.submit(leak, "default")
        second = pool.submit(write, "default")
        assert first.result(WAIT) is None
        assert second.result(WAIT) is None
    assert recorder.names() == ["written"]
    assert names("default") == ["committed"]
    [warning] = warnings(caplog)
    assert warning.startswith(f"tests.test_hygiene.{leak.__name__} left {left}")


@pytest.mark.django_db(transaction=True, databases=DATABASES)
def test_a_thread_and_an_initializer_are_named_too(caplog):
    thread = threads.Thread(target=leave_atomic_open, args=("default",), name="leaky")
    thread.start()
    thread.join(WAIT)
    with threads.ThreadPoolExecutor(1, initializer=leave_autocommit_off, initargs=("other",)) as p:
        p.submit(write, "other").result(WAIT)
    assert names("default") == []
    assert names("other") == ["committed"]
    assert [w.split(" on the ")[0] for w in warnings(caplog)] == [
        "Thread 'leaky' left an atomic block open",
        "tests.test_hygiene.leave_autocommit_off left autocommit off",
    ]


def leave_atomic_open_on_a_broken_connection(using: str) -> None:
    leave_atomic_open(using)
    wrapper = connections[using]

    def broken() -> None:
        raise wrapper.Database.OperationalError("the server went away")

    wrapper._rollback = broken  # type: ignore[method-assign]
    recorder.record("wrapper", wrapper)


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_cannot_roll_back_is_closed(caplog):
    with threads.ThreadPoolExecutor(1) as pool:
        pool.submit(leave_atomic_open_on_a_broken_connection, "default").result(WAIT)
        [(_, wrapper)] = recorder.calls
        assert wrapper.connection is None
        del wrapper._rollback
        pool.submit(write, "default").result(WAIT)
    assert names("default") == ["committed"]
    assert len(warnings(caplog)) == 1


def defer_again() -> None:
    after_response.defer(recorder.record, "deferred by the next call")


@pytest.mark.django_db(transaction=True)
def test_a_call_after_a_poisoned_one_defers_normally():
    """Before the clean-up, the next call's defer() found the first call's atomic block still
    open: its call waited for a commit never made and was counted as rolled back."""
    with override_settings(AFTER_RESPONSE_WORKERS=1):
        after_response.defer(leave_atomic_open, "default")
        after_response.defer(defer_again)
        assert recorder.wait_for(1) == ["deferred by the next call"]
        assert after_response.drain(WAIT)
        stats = after_response.stats()
        # The call deferred inside the open block was rolled back with it: one discard only.
        assert (stats.discarded, stats.waiting, stats.done) == (1, 0, 3)
