"""after_response.tasks.AfterResponseBackend, and the same task code on django-tasks-db.

Django >= 6.0 has ``django.tasks``; on Django 5.2 the django-tasks backport provides it. The unit
tests run the backend in this process (with the test client, the pool's worker threads and
``after_response.drain()``); the end-to-end tests serve tests/tasks_app/ with gunicorn, once
with this backend and once with django-tasks-db's ``DatabaseBackend`` and its ``db_worker``
command in a separate process, changing nothing but ``TASKS``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import AsyncClient, Client
from django.utils import timezone

import after_response
from after_response import tasks as backend_module
from after_response.tasks import AfterResponseBackend, TaskNotRun
from after_response.testing import capture_deferred

from . import recorder
from .tasks_app import compat

if not compat.AVAILABLE:
    pytest.skip(
        "Django Tasks needs Django >= 6.0 or the django-tasks backport (pip install django-tasks)",
        allow_module_level=True,
    )

# After the skip: their @task needs the framework.
from .tasks_app import processes, tasks
from .tasks_app.compat import (
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task,
    task_backends,
)

BACKEND = "after_response.tasks.AfterResponseBackend"
DUMMY = f"{compat.FRAMEWORK}.backends.dummy.DummyBackend"


@pytest.fixture(autouse=True)
def tasks_settings(settings: Any) -> Iterator[None]:
    settings.TASKS = {"default": {"BACKEND": BACKEND}, "dummy": {"BACKEND": DUMMY}}
    settings.ROOT_URLCONF = "tests.tasks_app.urls"
    tasks.started.clear()
    tasks.release.clear()
    yield
    tasks.release.set()  # a held task never outlives its test


@pytest.fixture
def signals() -> Iterator[list[tuple[str, type, str, str]]]:
    """(signal, sender, status, thread name) of every task signal, in order."""
    sent: list[tuple[str, type, str, str]] = []
    lock = threading.Lock()

    def receiver(name: str) -> Callable[..., None]:
        def receive(sender: type, task_result: Any, **kwargs: Any) -> None:
            with lock:
                sent.append((name, sender, task_result.status, threading.current_thread().name))

        return receive

    receivers = {
        compat.task_enqueued: receiver("enqueued"),
        compat.task_started: receiver("started"),
        compat.task_finished: receiver("finished"),
    }
    for signal, receive in receivers.items():
        signal.connect(receive)
    yield sent
    for signal, receive in receivers.items():
        signal.disconnect(receive)


def drained() -> None:
    assert after_response.drain(recorder.WAIT)


def refreshed(result: Any) -> Any:
    result.refresh()
    return result


# -- the backend contract --------------------------------------------------------------------


def test_capabilities() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, AfterResponseBackend)
    assert backend.supports_async_task
    assert backend.supports_get_result
    assert backend.supports_priority  # accepted and recorded; see test_priority_reorders_nothing
    assert not backend.supports_defer


def test_validate_task(settings: Any) -> None:
    with pytest.raises(InvalidTask, match="run_after"):
        tasks.remember.using(run_after=timezone.now() + timedelta(hours=1))
    with pytest.raises(InvalidTask, match="Queue 'emails' is not valid"):
        tasks.remember.using(queue_name="emails")
    with pytest.raises(InvalidTask, match="context"):
        task(takes_context=True)(tasks.remember.func)
    with pytest.raises(InvalidTask, match="module level"):
        task(lambda: None)

    settings.TASKS = {"default": {"BACKEND": BACKEND, "QUEUES": ["default", "emails"]}}
    result = tasks.remember.using(queue_name="emails").enqueue("on emails")
    drained()
    assert refreshed(result).status == TaskResultStatus.SUCCESSFUL
    assert result.task.queue_name == "emails"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_results": -1}, "must be an int >= 0"),
        ({"max_results": "many"}, "must be an int >= 0"),
        ({"max_results": True}, "must be an int >= 0"),
        ({"max_result": 10}, r"unknown keys \['max_result'\]"),
    ],
)
def test_bad_options(settings: Any, options: dict[str, Any], message: str) -> None:
    settings.TASKS = {"default": {"BACKEND": BACKEND, "OPTIONS": options}}
    with pytest.raises(ImproperlyConfigured, match=message):
        task_backends["default"]


def test_outside_a_request_the_task_goes_to_the_pool_at_once(signals: list[Any]) -> None:
    result = tasks.remember.enqueue("outside")
    assert result.status == TaskResultStatus.READY
    assert recorder.wait_for(1) == ["outside"]
    drained()

    assert result.status == TaskResultStatus.READY  # a snapshot, as from any backend
    refreshed(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == "outside"
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert result.attempts == 1
    assert result.worker_ids[0].startswith(f"{os.getpid()}:after_response-")
    assert result.backend == "default" and not result.errors

    assert [(name, sender, status) for name, sender, status, _ in signals] == [
        ("enqueued", AfterResponseBackend, TaskResultStatus.READY),
        ("started", AfterResponseBackend, TaskResultStatus.RUNNING),
        ("finished", AfterResponseBackend, TaskResultStatus.SUCCESSFUL),
    ]
    assert signals[0][3] == threading.current_thread().name
    assert signals[1][3] == signals[2][3] == result.worker_ids[0].split(":")[1]


def test_in_a_request_tasks_run_after_the_response_in_order_with_deferred_calls() -> None:
    response = Client().get("/in-order/")
    assert response.json()["status"] == TaskResultStatus.READY
    drained()
    assert recorder.names() == ["view returns", "first task", "plain call", "second task"]
    for result_id in response.json()["ids"]:
        assert tasks.remember.get_result(result_id).status == TaskResultStatus.SUCCESSFUL


def test_a_task_runs_with_the_request_context() -> None:
    Client().get("/environment/", headers={"accept-language": "fr"})
    drained()
    [(name, environment)] = recorder.calls
    assert name == "environment"
    assert environment["language"] == "fr"
    assert environment["thread"].startswith("after_response-")


@pytest.mark.django_db(transaction=True)
def test_a_task_waits_for_the_commit_and_a_rollback_discards_it() -> None:
    committed = Client().get("/atomic/commit/").json()["id"]
    rolled_back = Client().get("/atomic/rollback/").json()["id"]
    drained()
    assert recorder.names() == ["commit"]
    assert tasks.remember.get_result(committed).status == TaskResultStatus.SUCCESSFUL
    # Like the row a database backend wrote in that transaction: it never existed.
    with pytest.raises(TaskResultDoesNotExist):
        tasks.remember.get_result(rolled_back)


@pytest.mark.django_db(transaction=True)
def test_outside_a_request_a_task_waits_for_the_commit_too() -> None:
    from django.db import transaction

    with transaction.atomic():
        result = tasks.remember.enqueue("after commit")
        drained()
        assert recorder.names() == []
    assert recorder.wait_for(1) == ["after commit"]
    drained()
    assert refreshed(result).status == TaskResultStatus.SUCCESSFUL


def test_a_failing_task_is_a_failed_result_logged_once(
    signals: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    before = after_response.stats()
    with caplog.at_level(logging.ERROR):
        result = tasks.fail.enqueue("boom")
        after = tasks.remember.enqueue("after the failure")
        drained()

    refreshed(result)
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class is ValueError
    assert "boom failed on purpose" in error.traceback
    assert result.finished_at is not None
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    assert refreshed(after).status == TaskResultStatus.SUCCESSFUL
    assert ("finished", AfterResponseBackend, TaskResultStatus.FAILED) in [s[:3] for s in signals]

    # Logged once, with the traceback, by Django's own task_finished receiver (as its backends
    # are); the deferred call that ran the task did its job, so the pool counts it done.
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == compat.TASKS_LOGGER
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    stats = after_response.stats()
    assert (stats.done - before.done, stats.failed - before.failed) == (2, 0)


def test_a_return_value_that_is_not_json_fails_the_task() -> None:
    result = tasks.returns_something_odd.enqueue()
    drained()
    assert refreshed(result).status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is TypeError
    assert "A task's return value must be JSON data" in result.errors[0].traceback


def test_system_exit_fails_the_task_and_the_worker_survives() -> None:
    result = tasks.exits.enqueue()
    drained()
    assert refreshed(result).status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is SystemExit
    tasks.remember.enqueue("still working")
    assert recorder.wait_for(1) == ["still working"]


def test_takes_context() -> None:
    result = tasks.with_context.enqueue("with context")
    drained()
    assert recorder.calls == [("with context", (result.id, 1))]
    # The task read its own result from the worker thread: results are the process's.
    assert refreshed(result).return_value == {"attempt": 1, "status_seen": "RUNNING"}


def test_async_tasks_and_aenqueue() -> None:
    response = Client().get("/async/", headers={"accept-language": "de"})
    drained()
    assert recorder.calls == [
        ("view returns", None),
        ("aenqueue", "de"),
        ("enqueue from async view", None),
    ]
    for result_id in response.json()["ids"]:
        assert task_backends["default"].get_result(result_id).status == "SUCCESSFUL"

    result = async_to_sync(tasks.remember_async.aenqueue)("outside, async")
    drained()
    assert refreshed(result).return_value == "outside, async"


def test_aenqueue_under_asgi() -> None:
    response = async_to_sync(AsyncClient().get)("/async/", headers={"accept-language": "de"})
    assert response.status_code == 200
    drained()
    assert recorder.names() == ["view returns", "aenqueue", "enqueue from async view"]


def test_arguments_make_the_json_round_trip_of_a_distributed_backend() -> None:
    result = tasks.echo.enqueue((1, 2), {3: "three"}, when=b"bytes")
    assert result.args == [[1, 2], {"3": "three"}]
    assert result.kwargs == {"when": "bytes"}
    drained()
    [(_, (args, kwargs))] = recorder.calls
    assert args == ([1, 2], {"3": "three"}) and kwargs == {"when": "bytes"}
    assert refreshed(result).return_value == {
        "args": [[1, 2], {"3": "three"}],
        "kwargs": {"when": "bytes"},
        "1": "one",
    }


@pytest.mark.parametrize("argument", [datetime(2026, 1, 1), object(), {(1, 2): "tuple key"}])
def test_arguments_that_are_not_json_fail_at_the_call_site(
    argument: Any, signals: list[Any]
) -> None:
    accepted = after_response.stats().accepted
    with pytest.raises(
        TypeError, match=r"Task arguments must be JSON data, .* \(order.pk, not order"
    ):
        tasks.echo.enqueue(argument)
    assert after_response.stats().accepted == accepted
    assert signals == []


def test_results_are_snapshots() -> None:
    result = tasks.echo.enqueue([1])
    drained()
    first = tasks.echo.get_result(result.id)
    first.args.append("changed")
    first.return_value["args"].append("changed")
    first.worker_ids.clear()
    second = tasks.echo.get_result(result.id)
    assert second.args == [[1]]
    assert second.return_value["args"] == [[1]]
    assert len(second.worker_ids) == 1


def test_get_result_of_an_unknown_id() -> None:
    with pytest.raises(TaskResultDoesNotExist):
        tasks.remember.get_result("nope")


def test_results_kept_are_bounded(settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"max_results": 2}}}
    results = [tasks.remember.enqueue(f"task {n}") for n in range(3)]
    drained()
    assert sorted(recorder.names()) == ["task 0", "task 1", "task 2"]  # evicted still runs
    with pytest.raises(TaskResultDoesNotExist):
        results[0].refresh()
    assert [refreshed(r).status for r in results[1:]] == [TaskResultStatus.SUCCESSFUL] * 2

    settings.TASKS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"max_results": 0}}}
    assert not task_backends["default"].supports_get_result
    result = tasks.remember.enqueue("not kept")
    drained()
    with pytest.raises(TaskResultDoesNotExist):
        result.refresh()


def test_a_cancelled_task_reads_failed() -> None:
    result_id = Client().get("/cancel/").json()["id"]
    drained()
    assert recorder.names() == []
    result = tasks.remember.get_result(result_id)
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is TaskNotRun
    assert "cancelled before it started" in result.errors[0].traceback
    assert tasks.remember.get_result(result_id).errors == result.errors  # settled once


def test_a_dropped_task_reads_failed_and_priority_reorders_nothing(settings: Any) -> None:
    settings.AFTER_RESPONSE_WORKERS = 1
    settings.AFTER_RESPONSE_MAX_PENDING = 2
    settings.AFTER_RESPONSE_WHEN_FULL = "drop"
    held = tasks.hold.enqueue("held")
    assert tasks.started.wait(recorder.WAIT)
    queued = [tasks.remember.enqueue("low"), tasks.urgent.enqueue("urgent")]
    dropped = tasks.remember.enqueue("dropped")  # a third one waiting: the backlog is full
    tasks.release.set()
    drained()

    # Priority is recorded, but the pool runs what waits in the order it came.
    assert recorder.names() == ["held", "low", "urgent"]
    assert queued[1].task.priority == 10
    assert [refreshed(r).status for r in [held, *queued]] == [TaskResultStatus.SUCCESSFUL] * 3
    assert refreshed(dropped).status == TaskResultStatus.FAILED
    assert dropped.errors[0].exception_class is TaskNotRun
    assert "dropped by after_response's pool" in dropped.errors[0].traceback


def test_a_task_enqueued_by_a_task_goes_to_the_pool_at_once() -> None:
    tasks.enqueue_another.enqueue("nested")
    assert recorder.wait_for(1) == ["nested"]


def test_immediate_mode_runs_tasks_when_the_response_closes(settings: Any) -> None:
    settings.AFTER_RESPONSE_IMMEDIATE = True
    response = Client().get("/in-order/")
    # No drain: the calls ran inline, in the thread that closed the response.
    assert recorder.names() == ["view returns", "first task", "plain call", "second task"]
    for result_id in response.json()["ids"]:
        assert tasks.remember.get_result(result_id).status == TaskResultStatus.SUCCESSFUL


def test_capture_deferred_sees_tasks_by_their_function_name() -> None:
    with capture_deferred() as calls:
        response = Client().get("/in-order/")
    assert [call.name for call in calls] == [
        "tests.tasks_app.tasks.remember",
        "tests.recorder.record",
        "tests.tasks_app.tasks.remember",
    ]
    assert recorder.names() == ["view returns"]
    first_id = response.json()["ids"][0]
    assert tasks.remember.get_result(first_id).status == TaskResultStatus.READY


# -- request.defer() with a Task -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_request_defer_enqueues_a_task_on_its_backend_after_the_response_and_commit(
    signals: list[Any],
) -> None:
    Client().get("/defer-task/commit/")
    Client().get("/defer-task/rollback/")
    drained()
    # The Task's own backend (here Django's DummyBackend, which runs nothing) got it once, from
    # a worker thread after the first response: never in the view, never after a rollback.
    dummy = [s for s in signals if s[1] is not AfterResponseBackend]
    assert [(name, status) for name, _, status, _ in dummy] == [("enqueued", "READY")]
    assert dummy[0][3].startswith("after_response-")
    assert recorder.names() == ["view returns", "view returns"]


@pytest.mark.django_db
def test_request_defer_with_a_task_of_this_backend() -> None:
    # Enqueued after the response, from a worker thread: from there it goes to the pool at once.
    with capture_deferred(execute=True) as calls:
        Client().get("/defer-task/deferred/", {"backend": "default"})
        assert recorder.names() == ["view returns"]
    assert [call.name for call in calls] == ["tests.tasks_app.tasks.remember"] * 2
    assert recorder.names() == ["view returns", "deferred"]


# -- internals worth pinning down ------------------------------------------------------------


def test_the_child_of_a_fork_forgets_the_parents_results() -> None:
    result = tasks.remember.enqueue("parent's")
    drained()
    backend_module._lock.acquire()  # what the before-fork hook does
    backend_module._after_fork_in_child()
    assert all(not results.entries for results in backend_module._results.values())
    with pytest.raises(TaskResultDoesNotExist):
        result.refresh()


def test_json_round_trip_error_says_the_fix() -> None:
    with pytest.raises(
        TypeError, match=r"Things must be JSON data, as on every Tasks backend \(Unsupported type"
    ):
        backend_module.json_round_trip([object()], "Things")


# -- end to end: the graduation path ---------------------------------------------------------

WAIT = 20.0  # seconds: bound of every poll for something that should happen soon
WORKER_ID = "e2e-db-worker"
VISITS = "SELECT pid FROM tasks_app_visit WHERE name = %s"
DB_RESULTS = (
    "SELECT id, status, return_value, worker_ids, task_path FROM django_tasks_database_dbtaskresult"
)
PROBLEM = r"Traceback|ERROR|CRITICAL"
FINISHED = ("SUCCESSFUL", "FAILED")


@dataclasses.dataclass
class Site:
    backend: str
    database: processes.Database
    server: processes.Server
    worker: processes.Process | None

    def client(self) -> httpx.Client:
        # No keep-alive: every request is a new connection, which any worker process may take.
        return httpx.Client(
            base_url=self.server.url,
            timeout=10.0,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def explain(self, what: str) -> str:
        logs = [self.server] + ([self.worker] if self.worker else [])
        return "\n".join([what, *(process.explain("") for process in logs)])

    def visit_pid(self, name: str) -> int:
        rows = poll(lambda: self.database.rows(VISITS, name), f"no visit {name!r}", self)
        return int(rows[0][0])

    def db_result(self, result_id: str) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            for row_id, status, return_value, worker_ids, task_path in self.database.rows(
                DB_RESULTS
            ):
                if uuid.UUID(str(row_id)) == uuid.UUID(result_id) and status in FINISHED:
                    return {
                        "status": status,
                        "return_value": _json(return_value),
                        "worker_ids": _json(worker_ids),
                        "task_path": task_path,
                    }
            return None

        return poll(finished, f"no finished task result {result_id}", self)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # SQLite: text; PG: jsonb


def poll(check: Callable[[], Any], what: str, site: Site) -> Any:
    return processes.poll(check, WAIT, lambda: site.explain(what))


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def tasks_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[processes.Database]:
    """The end-to-end project's database: its own, migrated, on this run's engine."""
    database = processes.Database(
        connection.settings_dict,
        f"test_after_response_tasks_{django_settings.SUFFIX}",
        tmp_path_factory.mktemp("db"),
    )
    database.create()
    try:
        processes.manage(processes.environment(database.settings, "database"), "migrate")
        yield database
    finally:
        database.drop()


@pytest.fixture(scope="module", params=["after_response", "database"])
def site(
    request: pytest.FixtureRequest,
    tasks_database: processes.Database,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    backend = request.param
    env = processes.environment(tasks_database.settings, backend)
    logs = tmp_path_factory.mktemp(f"tasks-{backend}")
    started: list[processes.Process] = []
    try:
        worker = None
        if backend == "database":
            worker = processes.db_worker(env, logs / "db_worker.log", WORKER_ID)
            started.append(worker)
            processes.poll(
                lambda: worker.logged(processes.WORKER_STARTING),
                processes.START_TIMEOUT,
                lambda: worker.explain("db_worker never said it started"),
            )
        # In-process results live in the process that ran the task: one server worker process
        # lets the test read them back. The database backend's results are everyone's.
        server = processes.Server(env, logs / "gunicorn.log", workers=1 if worker is None else 2)
        started.append(server)
        server.wait_until_ready()
        yield Site(backend, tasks_database, server, worker)
    finally:
        stopped = {process.name: process.stop() for process in started}
    assert all(stopped.values()), f"had to SIGKILL: {stopped}"
    for process in started:
        assert not re.search(PROBLEM, process.log()), process.explain("it logged an error")


@pytest.mark.servers
@pytest.mark.timeout(120)
def test_the_same_task_code_runs_where_tasks_says(site: Site) -> None:
    name = unique("checkout")
    with site.client() as client:
        response = client.get(f"/checkout/{name}/")
        assert response.status_code == 200, site.explain(response.text)
        enqueued = response.json()
        pid = site.visit_pid(name)

        if site.worker is None:
            # In the server process that served the request, after its response.
            assert pid == enqueued["pid"]
        else:
            # In the db_worker process, never in the server's.
            assert pid == site.worker.pid and pid not in site.server.worker_pids
            row = site.db_result(enqueued["id"])
            assert row == {
                "status": "SUCCESSFUL",
                "return_value": {"name": name, "pid": pid},
                "worker_ids": [WORKER_ID],
                "task_path": "tests.tasks_app.tasks.record_visit",
            }

        # And as the Tasks API reports it, from a server process.
        def finished() -> dict[str, Any] | None:
            answer = client.get(f"/result/{enqueued['id']}/")
            assert answer.status_code == 200, site.explain(answer.text)
            return answer.json() if answer.json()["status"] in FINISHED else None

        result = poll(finished, "the result never finished", site)
    assert result["status"] == "SUCCESSFUL"
    assert result["return_value"] == {"name": name, "pid": pid}


@pytest.mark.servers
@pytest.mark.timeout(120)
def test_a_task_enqueued_in_a_rolled_back_transaction_never_runs(site: Site) -> None:
    rolled_back, committed = unique("rolled-back"), unique("committed")
    with site.client() as client:
        discarded = client.get(f"/checkout/{rolled_back}/", params={"rollback": "1"}).json()
        client.get(f"/checkout/{committed}/")
        site.visit_pid(committed)
        # Deterministic: the row (database) or the call (in-process) went with the rollback.
        assert site.database.rows(VISITS, rolled_back) == []
        assert client.get(f"/result/{discarded['id']}/").status_code == 404


@pytest.mark.servers
@pytest.mark.timeout(120)
def test_request_defer_enqueues_the_task_after_the_response(site: Site) -> None:
    name = unique("deferred")
    with site.client() as client:
        served = client.get(f"/defer-checkout/{name}/").json()
    pid = site.visit_pid(name)
    assert pid == (served["pid"] if site.worker is None else site.worker.pid)


NO_TASKS_FRAMEWORK = """
import sys

sys.modules["django.tasks"] = sys.modules["django_tasks"] = None  # neither can be imported
import django
from django.conf import settings

settings.configure(INSTALLED_APPS=["after_response"])
django.setup()
from after_response.tasks import AfterResponseBackend

try:
    AfterResponseBackend("default", {})
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_without_a_tasks_framework_the_backend_says_what_to_install() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", NO_TASKS_FRAMEWORK],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("ImproperlyConfigured AfterResponseBackend needs"), result
    assert 'pip install "after_response[tasks]"' in result.stdout
