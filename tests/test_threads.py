"""after_response.threads: drop-in Thread and ThreadPoolExecutor with Django's connection hygiene.

Tests that do ORM work in the threads use ``transaction=True``: the threads have their own
connections, which must see what the test committed and must not be the test's connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections, connection, connections, transaction
from django.test import RequestFactory, override_settings
from django.urls import clear_script_prefix
from django.utils import translation

from after_response import db, threads
from after_response.threads import BrokenThreadPool

from . import recorder
from .models import Record

WAIT = recorder.WAIT
ROOT = Path(__file__).resolve().parent.parent

THREADS = pytest.mark.parametrize(
    "thread_class", [threading.Thread, threads.Thread], ids=["stdlib", "ours"]
)
POOLS = pytest.mark.parametrize(
    "pool_class",
    [concurrent.futures.ThreadPoolExecutor, threads.ThreadPoolExecutor],
    ids=["stdlib", "ours"],
)
CLEAN_UP = ["close_old_connections", "close_old_connections", "close_all"]


def current_name() -> str:
    return threading.current_thread().name


class Hygiene:
    """What ran in which thread: db.py's clean-ups (spied on) and the work itself."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def note(self, what: str) -> None:
        self.events.append((what, current_name()))

    def of(self, thread_name: str) -> list[str]:
        return [what for what, name in self.events if name == thread_name]


@pytest.fixture
def hygiene(monkeypatch: pytest.MonkeyPatch) -> Hygiene:
    spy = Hygiene()
    close_old, close_thread = db.close_old_connections, db.close_thread_connections

    def spy_close_old() -> None:
        spy.note("close_old_connections")
        close_old()

    def spy_close_thread() -> None:
        spy.note("close_all")
        close_thread()

    monkeypatch.setattr(db, "close_old_connections", spy_close_old)
    monkeypatch.setattr(db, "close_thread_connections", spy_close_thread)
    return spy


@pytest.fixture
def conn_max_age() -> Iterator[Callable[[int], None]]:
    """Set CONN_MAX_AGE for every thread's connections (they share the settings dict)."""
    settings_dict = connections["default"].settings_dict
    before = settings_dict["CONN_MAX_AGE"]
    yield lambda seconds: settings_dict.__setitem__("CONN_MAX_AGE", seconds)
    settings_dict["CONN_MAX_AGE"] = before


def on_postgres() -> bool:
    return connection.vendor == "postgresql"


# -- hygiene happens in the worker thread, around the work --------------------------------


class Refresher(threads.Thread):
    """The usual pattern: a subclass that overrides run()."""

    def __init__(self, spy: Hygiene) -> None:
        super().__init__(name="worker")
        self.spy = spy

    def run(self) -> None:
        self.spy.note("work")


class LoudRefresher(Refresher):
    """A subclass of that subclass, whose run() calls super().run()."""

    def run(self) -> None:
        self.spy.note("loud")
        super().run()


class RunMixin:
    spy: Hygiene

    def run(self) -> None:
        self.spy.note("work")


class MixedIn(RunMixin, threads.Thread):
    """run() comes from a mixin that precedes Thread in the MRO."""

    def __init__(self, spy: Hygiene) -> None:
        super().__init__(name="worker")
        self.spy = spy


class Named(threads.Thread):
    """A subclass that keeps Thread's run(): wrapped once, not twice."""

    def __init__(self, spy: Hygiene) -> None:
        super().__init__(target=spy.note, args=("work",), name="worker")


def with_target(spy: Hygiene) -> threads.Thread:
    return threads.Thread(target=spy.note, args=("work",), name="worker")


@pytest.mark.parametrize(
    ("make_thread", "work"),
    [
        (with_target, ["work"]),
        (Named, ["work"]),
        (Refresher, ["work"]),
        (LoudRefresher, ["loud", "work"]),
        (MixedIn, ["work"]),
    ],
    ids=["target", "subclass-with-target", "subclass", "subclass-of-subclass", "mixin"],
)
def test_a_thread_runs_like_a_request_in_the_new_thread(hygiene, make_thread, work):
    thread = make_thread(hygiene)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    close_old, close_old_after, close_all = CLEAN_UP
    assert hygiene.of("worker") == [close_old, *work, close_old_after, close_all]
    assert hygiene.of(current_name()) == []  # nothing in the thread that started it


def test_run_called_directly_runs_in_the_caller_without_clean_up(hygiene):
    thread = with_target(hygiene)
    thread.run()  # like threading.Thread: no new thread, so nothing of a request either
    assert hygiene.events == [("work", current_name())]


def test_a_thread_started_without_our_start_still_gets_a_default_context(hygiene):
    seen: list[str | None] = []

    class SkipsStart(threads.Thread):
        def start(self) -> None:
            threading.Thread.start(self)

        def run(self) -> None:
            seen.append(threading.current_thread().name)

    thread = SkipsStart(name="skips")
    thread.start()
    thread.join(WAIT)
    assert seen == ["skips"]
    assert hygiene.of("skips") == CLEAN_UP


def test_pool_jobs_run_like_requests_in_the_worker(hygiene):
    with threads.ThreadPoolExecutor(
        1, thread_name_prefix="pool", initializer=hygiene.note, initargs=("init",)
    ) as pool:
        first = pool.submit(hygiene.note, "job 1")
        failing = pool.submit(recorder.fail, "job 2")
        assert first.result(WAIT) is None
        assert isinstance(failing.exception(WAIT), ValueError)
        assert hygiene.of(current_name()) == []  # submitting cleans nothing up here
    request = ["close_old_connections", "close_old_connections"]
    assert hygiene.of("pool_0") == [
        request[0],
        "init",
        request[1],
        request[0],
        "job 1",
        request[1],
        *request,  # job 2 raised: cleaned up all the same
        "close_all",
    ]


def test_asyncio_takes_it_as_its_default_executor(hygiene):
    pool = threads.ThreadPoolExecutor(1, thread_name_prefix="loop")
    assert isinstance(pool, concurrent.futures.ThreadPoolExecutor)

    async def main() -> str:
        asyncio.get_running_loop().set_default_executor(pool)
        return await asyncio.to_thread(current_name)

    assert asyncio.run(main()) == "loop_0"  # asyncio.run shuts its default executor down
    assert hygiene.of("loop_0") == CLEAN_UP


# -- the caller's transaction -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_starting_work_inside_atomic_leaves_the_callers_transaction_alone(hygiene):
    committed: list[bool] = []
    with transaction.atomic():
        Record.objects.create(name="caller")
        transaction.on_commit(lambda: committed.append(True))
        raw = connection.connection

        thread = threads.Thread(target=Record.objects.count)
        thread.start()
        thread.join(WAIT)
        with threads.ThreadPoolExecutor(2) as pool:
            uncommitted = pool.submit(Record.objects.filter(name="caller").count)
            assert uncommitted.result(WAIT) == 0  # the worker's own connection

        assert connection.connection is raw
        assert connection.in_atomic_block and not connection.needs_rollback
    assert committed == [True]
    assert Record.objects.filter(name="caller").count() == 1
    assert hygiene.of(current_name()) == []


@pytest.mark.django_db(transaction=True)
def test_clean_up_in_the_caller_would_break_its_transaction():
    # What a thread class that cleans up in start(), in the calling thread, does: the reason
    # the test above checks the connection, the transaction and its on_commit callbacks.
    committed: list[bool] = []
    with transaction.atomic():
        Record.objects.create(name="caller")
        transaction.on_commit(lambda: committed.append(True))
        close_old_connections()
        assert connection.needs_rollback
    assert committed == []
    assert not Record.objects.filter(name="caller").exists()


# -- no connection outlives the threads (SQLite and PostgreSQL) -----------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("max_age", [0, 60], ids=["CONN_MAX_AGE=0", "persistent"])
def test_threads_doing_orm_work_leave_no_connection_behind(conn_max_age, max_age):
    conn_max_age(max_age)
    count = 4
    baseline = recorder.backends() if on_postgres() else set()
    all_connected = threading.Barrier(count + 1, timeout=WAIT)
    release = threading.Event()
    used: list[Any] = []

    def work() -> None:
        Record.objects.create(name="thread")
        used.append(connections["default"])
        all_connected.wait()
        assert release.wait(WAIT)

    workers = [threads.Thread(target=work) for _ in range(count)]
    for worker in workers:
        worker.start()
    all_connected.wait()
    assert all(wrapper.connection is not None for wrapper in used)
    if on_postgres():
        # They really were connected (a backend is listed once its connection is made).
        assert len(recorder.backends() - baseline) == count
    release.set()
    for worker in workers:
        worker.join(WAIT)
        assert not worker.is_alive()

    assert all(wrapper.connection is None for wrapper in used)
    if on_postgres():
        assert recorder.backends_left(baseline) == set()
    assert Record.objects.filter(name="thread").count() == count


@pytest.mark.django_db(transaction=True)
def test_a_thread_that_raises_closes_its_connections_too(conn_max_age, monkeypatch):
    conn_max_age(60)
    hooked: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)
    used: list[Any] = []

    def work() -> None:
        Record.objects.count()
        used.append(connections["default"])
        raise ValueError("after the query")

    thread = threads.Thread(target=work)
    thread.start()
    thread.join(WAIT)
    assert [args.exc_type for args in hooked] == [ValueError]
    assert used[0].connection is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("max_age", [0, 60], ids=["CONN_MAX_AGE=0", "persistent"])
def test_pool_jobs_doing_orm_work_leave_no_connection_behind(conn_max_age, max_age):
    conn_max_age(max_age)
    workers = 4
    baseline = recorder.backends() if on_postgres() else set()
    all_busy = threading.Barrier(workers, timeout=WAIT)
    used: dict[str, set[int]] = {}
    wrappers: list[Any] = []

    def job(name: str) -> None:
        Record.objects.create(name=name)
        wrapper = connections["default"]
        wrappers.append(wrapper)
        used.setdefault(current_name(), set()).add(id(wrapper.connection))
        if name == "first":
            all_busy.wait()  # the first jobs start every worker

    with threads.ThreadPoolExecutor(workers, thread_name_prefix="orm") as pool:
        for future in [pool.submit(job, "first") for _ in range(workers)]:
            future.result(WAIT)
        for future in [pool.submit(job, "more") for _ in range(3 * workers)]:
            future.result(WAIT)
        assert len(used) == workers
        if max_age:
            # Like a server's threads between requests: each worker keeps its connection.
            assert all(len(ids) == 1 for ids in used.values())
            if on_postgres():
                assert len(recorder.backends() - baseline) == workers
        else:
            assert all(wrapper.connection is None for wrapper in wrappers)
            if on_postgres():
                # The pool is still up, its workers idle.
                assert recorder.backends_left(baseline) == set()

    assert all(wrapper.connection is None for wrapper in wrappers)
    if on_postgres():
        assert recorder.backends_left(baseline) == set()
    assert Record.objects.count() == 4 * workers


def test_stdlib_threads_break_the_test_database_teardown_and_ours_do_not():
    """Each run is a small Django project (tests/teardown_demo) with its own test database."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("'database is being accessed by other users' is PostgreSQL's")
    import psycopg

    runs = {}
    for classes in ("stdlib", "after_response"):
        for shape in ("thread", "pool"):
            name = f"test_after_response_demo_{uuid.uuid4().hex[:12]}"
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "tests.teardown_demo.settings",
                "AFTER_RESPONSE_DEMO": f"{classes}-{shape}",
                "AFTER_RESPONSE_DEMO_DB": name,
            }
            command = [sys.executable, "-m", "django", "test", "tests.teardown_demo.scenarios"]
            process = subprocess.Popen(
                [*command, "--noinput"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            runs[classes, shape] = (name, process)
    outputs = {}
    try:
        for key, (_, process) in runs.items():
            outputs[key] = process.communicate(timeout=60)[0]
    finally:
        for _, process in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        with psycopg.connect(
            host=database["HOST"],
            port=database["PORT"],
            user=database["USER"],
            dbname="postgres",
            autocommit=True,
        ) as admin:
            for name, _ in runs.values():  # what a failed teardown left behind
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    for (classes, shape), output in outputs.items():
        process = runs[classes, shape][1]
        if classes == "stdlib":
            assert process.returncode != 0, output
            assert "is being accessed by other users" in output, output
        else:
            assert process.returncode == 0, output
            assert "being accessed" not in output, output
            assert "\nOK\n" in output, output


# -- request context ------------------------------------------------------------------------


@override_settings(ROOT_URLCONF="tests.threads_urls")
def test_work_started_from_a_request_runs_in_its_context():
    # Through Django's WSGIHandler, which sets the script prefix (the test client does not).
    environ = RequestFactory().get("/start-work/", HTTP_ACCEPT_LANGUAGE="fr").environ
    environ["SCRIPT_NAME"] = "/mount"
    statuses: list[str] = []
    result = WSGIHandler()(environ, lambda status, headers: statuses.append(status))
    try:
        b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]
        clear_script_prefix()  # the handler set it for this thread, as servers leave it
        translation.deactivate()  # LocaleMiddleware activated French for this thread
    assert statuses == ["200 OK"]
    seen = dict(recorder.calls)
    request_context = {
        "language": "fr",
        "timezone": "Europe/Paris",
        "script_prefix": "/mount/",
        "urlconf": "tests.threads_urls",
    }
    defaults = {"language": "en", "timezone": "UTC", "script_prefix": "/", "urlconf": None}
    for name, expected in (
        ("ours thread", request_context),
        ("ours pool", request_context),
        ("stdlib thread", defaults),
        ("stdlib pool", defaults),
    ):
        environment = dict(seen[name])
        del environment["thread"]
        assert environment == expected, name


def test_a_pool_worker_does_not_keep_one_jobs_context_for_the_next():
    with threads.ThreadPoolExecutor(1) as pool:
        with translation.override("de"):
            assert pool.submit(translation.get_language).result(WAIT) == "de"
        with translation.override("fr"):
            assert pool.submit(translation.get_language).result(WAIT) == "fr"
        assert pool.submit(translation.get_language).result(WAIT) == translation.get_language()


# -- behaves like the stdlib: Thread ------------------------------------------------------


@THREADS
def test_thread_arguments_name_daemon_and_join_timeout(thread_class):
    release = threading.Event()
    seen: list[object] = []

    def target(*args: object, **kwargs: object) -> None:
        seen.append((args, kwargs))
        assert release.wait(WAIT)

    thread = thread_class(target=target, args=(1, 2), kwargs={"x": 3}, name="named", daemon=True)
    assert (thread.name, thread.daemon, thread.is_alive(), thread.ident) == (
        "named",
        True,
        False,
        None,
    )
    thread.start()
    thread.join(timeout=0.01)  # returns while the thread still waits for release
    assert thread.is_alive()
    release.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert seen == [((1, 2), {"x": 3})]
    with pytest.raises(RuntimeError, match="threads can only be started once"):
        thread.start()


@THREADS
def test_thread_defaults(thread_class):
    thread = thread_class(target=current_name)
    assert re.fullmatch(r"Thread-\d+ \(current_name\)", thread.name)
    assert thread.daemon is False  # inherited from the thread that made it
    assert isinstance(thread, threading.Thread)


@THREADS
@pytest.mark.parametrize("error", [ValueError("boom"), SystemExit(3)], ids=repr)
def test_thread_exceptions_go_to_threading_excepthook(thread_class, error, monkeypatch):
    hooked: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)

    def fail() -> None:
        raise error

    thread = thread_class(target=fail)
    thread.start()
    thread.join(WAIT)
    [args] = hooked
    assert (args.exc_type, args.exc_value, args.thread) == (type(error), error, thread)


@THREADS
def test_a_subclass_overriding_run_runs_in_its_own_thread(thread_class):
    class Worker(thread_class):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.ran_in_itself = False

        def run(self) -> None:
            self.ran_in_itself = threading.current_thread() is self

    worker = Worker()
    worker.start()
    worker.join(WAIT)
    assert worker.ran_in_itself


# -- behaves like the stdlib: ThreadPoolExecutor ------------------------------------------


@POOLS
def test_results_and_map_order(pool_class):
    first_may_finish = threading.Event()

    def job(i: int) -> int:
        if i == 0:
            assert first_may_finish.wait(WAIT)  # finishes last...
        if i == 3:
            first_may_finish.set()
        return i * 10

    with pool_class(4) as pool:
        assert pool.submit(pow, 2, 5).result(WAIT) == 32
        assert pool.submit(dict, a=1).result(WAIT) == {"a": 1}
        assert list(pool.map(job, range(4), timeout=WAIT)) == [0, 10, 20, 30]  # ...comes first
        assert list(pool.map(pow, [2, 3], [3, 2])) == [8, 9]


@POOLS
def test_map_timeout_and_exceptions(pool_class):
    release = threading.Event()
    with pool_class(2) as pool:
        results = pool.map(release.wait, [WAIT, WAIT], timeout=0.05)
        with pytest.raises(TimeoutError):
            next(results)
        release.set()
        failing = pool.map(recorder.fail, ["map"])
        with pytest.raises(ValueError, match="map failed on purpose"):
            list(failing)


@POOLS
def test_exceptions_are_kept_in_the_future(pool_class):
    with pool_class(1) as pool:
        failed = pool.submit(recorder.fail, "job")
        exited = pool.submit(sys.exit, 3)
        after = pool.submit(pow, 2, 3)
        assert isinstance(failed.exception(WAIT), ValueError)
        with pytest.raises(ValueError, match="job failed on purpose"):
            failed.result()
        assert isinstance(exited.exception(WAIT), SystemExit)
        assert after.result(WAIT) == 8  # the worker survived both


@POOLS
def test_shutdown_without_waiting(pool_class):
    release = threading.Event()
    pool = pool_class(1)
    running = pool.submit(release.wait, WAIT)
    queued = pool.submit(pow, 2, 4)
    pool.shutdown(wait=False)  # returns at once, with a job still running
    assert not running.done()
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        pool.submit(pow, 1, 1)
    release.set()
    assert running.result(WAIT) is True
    assert queued.result(WAIT) == 16  # what was queued still runs
    pool.shutdown()


@POOLS
def test_shutdown_can_cancel_what_has_not_started(pool_class):
    started, release = threading.Event(), threading.Event()

    def block() -> bool:
        started.set()
        return release.wait(WAIT)

    pool = pool_class(1)
    running = pool.submit(block)
    assert started.wait(WAIT)
    pending = [pool.submit(pow, 2, i) for i in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert [future.cancelled() for future in pending] == [True, True, True]
    release.set()
    assert running.result(WAIT) is True
    pool.shutdown()


@POOLS
def test_context_manager_waits_for_the_work_and_shuts_down(pool_class):
    workers: list[threading.Thread] = []
    with pool_class(2) as pool:
        assert isinstance(pool, pool_class)
        future = pool.submit(lambda: workers.append(threading.current_thread()))
    assert future.done()
    assert not workers[0].is_alive()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(pow, 1, 1)
    with pytest.raises(KeyError), pool_class(1):
        raise KeyError("the body's exception goes through")


@POOLS
def test_thread_names(pool_class):
    with pool_class(1, thread_name_prefix="refresh") as pool:
        assert pool.submit(current_name).result(WAIT) == "refresh_0"
    with pool_class(1) as pool:
        assert re.fullmatch(r"ThreadPoolExecutor-\d+_0", pool.submit(current_name).result(WAIT))


@POOLS
def test_initializer_runs_once_in_each_worker_thread(pool_class):
    initialized: list[tuple[str, str]] = []
    both_busy = threading.Barrier(2, timeout=WAIT)

    def busy(_: int) -> str:
        both_busy.wait()
        return current_name()

    def setup(tag: str) -> None:
        initialized.append((tag, current_name()))

    with pool_class(2, initializer=setup, initargs=("db",)) as pool:
        names = list(pool.map(busy, range(2)))
        assert pool.submit(current_name).result(WAIT) in names
    assert sorted(initialized) == sorted(("db", name) for name in names)


@POOLS
def test_a_failing_initializer_breaks_the_pool(pool_class, caplog):
    with pool_class(1, initializer=recorder.fail, initargs=("init",)) as pool:
        future = pool.submit(pow, 2, 2)
        with pytest.raises(BrokenThreadPool):
            future.result(WAIT)
        with pytest.raises(BrokenThreadPool, match="initializer failed"):
            pool.submit(pow, 2, 2)
    [record] = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert (record.levelname, record.getMessage()) == ("CRITICAL", "Exception in initializer:")


@POOLS
def test_bad_arguments(pool_class):
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        pool_class(0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        pool_class(initializer="setup")


def test_default_max_workers_is_the_stdlibs():
    ours, stdlib = threads.ThreadPoolExecutor(), concurrent.futures.ThreadPoolExecutor()
    assert ours._max_workers == stdlib._max_workers


# -- exceptions nobody retrieved ----------------------------------------------------------


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "after_response"]


def test_an_exception_nobody_retrieved_is_logged_when_its_future_goes(caplog):
    with threads.ThreadPoolExecutor(1) as pool:
        got_result = pool.submit(recorder.fail, "result")
        got_exception = pool.submit(recorder.fail, "exception")
        ignored = pool.submit(recorder.fail, "ignored")
        succeeded = pool.submit(pow, 2, 2)
        concurrent.futures.wait([got_result, got_exception, ignored, succeeded], WAIT)
    with pytest.raises(ValueError):
        got_result.result()
    assert got_exception.exception() is not None
    del got_result, got_exception, succeeded
    assert logged(caplog) == []

    del ignored  # the last reference: logged at once
    [message] = logged(caplog)
    assert message == (
        "tests.recorder.fail raised in a ThreadPoolExecutor and nobody retrieved the "
        "exception from its Future"
    )
    [record] = [r for r in caplog.records if r.name == "after_response"]
    assert record.levelname == "ERROR"
    assert record.exc_info is not None and str(record.exc_info[1]) == "ignored failed on purpose"


def test_fire_and_forget_failures_are_logged(caplog):
    with threads.ThreadPoolExecutor(1) as pool:
        pool.submit(recorder.fail, "forgotten")
    assert len(logged(caplog)) == 1  # the worker dropped the last reference to the Future


def test_cancelled_futures_are_not_logged(caplog):
    release = threading.Event()
    with threads.ThreadPoolExecutor(1) as pool:
        pool.submit(release.wait, WAIT)
        cancelled = pool.submit(recorder.fail, "never runs")
        assert cancelled.cancel()
        release.set()
    del cancelled
    gc.collect()
    assert logged(caplog) == []


# -- lifecycle: garbage collection, fork, interpreter exit ----------------------------------


def test_workers_of_a_collected_pool_finish_their_work_and_end(hygiene):
    release = threading.Event()
    workers: list[threading.Thread] = []

    def job() -> bool:
        workers.append(threading.current_thread())
        return release.wait(WAIT)

    pool = threads.ThreadPoolExecutor(1, thread_name_prefix="dropped")
    future = pool.submit(job)
    del pool
    gc.collect()
    release.set()
    assert future.result(WAIT) is True
    workers[0].join(WAIT)
    assert not workers[0].is_alive()
    assert hygiene.of("dropped_0")[-1] == "close_all"


def test_a_pool_used_before_a_fork_works_in_the_child():
    pool = threads.ThreadPoolExecutor(2)
    assert pool.submit(os.getpid).result(WAIT) == os.getpid()  # its workers run in the parent
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            code = 0 if pool.submit(os.getpid).result(WAIT) == os.getpid() else 2
            pool.shutdown()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool.submit(os.getpid).result(WAIT) == os.getpid()  # the parent's still works
    pool.shutdown()


def test_a_fork_without_at_fork_hooks_is_noticed():
    # uWSGI without --py-call-osafterfork forks without running Python's at-fork hooks.
    pool = threads.ThreadPoolExecutor(1)
    assert pool.submit(pow, 2, 2).result(WAIT) == 4
    pool.shutdown()
    pool._pid = -1  # what a child forked without hooks would see
    pool.shutdown()  # rebuilt, not joining the parent's threads
    pool._pid = -1
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(pow, 2, 2)  # still shut down: the parent's flag is the child's too


AT_EXIT = """
import atexit, concurrent.futures, sys, threading
import django
from django.conf import settings

settings.configure()
django.setup()

def late_submit():
    for executor in (pool, idle):
        try:
            executor.submit(print, "late")
        except RuntimeError as exc:
            print("refused:", exc, flush=True)

atexit.register(late_submit)  # registered first: runs after the executors' own exit hooks
from after_response import threads

kind = threads if sys.argv[1] == "ours" else concurrent.futures
pool = kind.ThreadPoolExecutor(1)
idle = kind.ThreadPoolExecutor(1)  # never used: no worker of its own ended
started, exiting = threading.Event(), threading.Event()

def job():
    started.set()
    exiting.wait(10)  # work that outlasts the main thread, whatever the load
    print("job finished", flush=True)

pool.submit(job)
assert started.wait(10)
# Registered after the executors' own exit hooks, so it runs before them (and before atexit's):
# the job ends once the interpreter has begun to exit, never before "main done".
threading._register_atexit(exiting.set)
print("main done", flush=True)
"""


@pytest.mark.parametrize("kind", ["stdlib", "ours"])
def test_interpreter_exit_finishes_submitted_work(kind):
    result = subprocess.run(
        [sys.executable, "-c", AT_EXIT, kind],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "main done",
        "job finished",
        "refused: cannot schedule new futures after shutdown",  # its worker saw the exit
        "refused: cannot schedule new futures after interpreter shutdown",
    ]
