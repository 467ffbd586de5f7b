"""Graceful stops on real servers: every accepted call runs, or the log says which did not.

Each server of SERVERS runs tests/e2e/ (tests.e2e.drain_settings) in two worker processes (daphne
serves in its one process) on 127.0.0.1, against the test database. Every request defers one
database insert; the calls wait at a gate (a file, see tests/e2e/drain.py) that the test opens
right after it has sent the server its graceful stop signal (SIGTERM), so at the signal every
call is still pending and only the drain at shutdown can run it. Once every process of the
server has exited, the rows in the table are all the calls ever did.

1. With a drain budget that fits, the table holds exactly one row per request.
2. With a budget shorter than the backlog, each worker process logs how many calls it left
   running and how many never started, and the rows fall within those figures.
3. An app imported by the master process, whose pool ran a call there before the fork, still
   runs its requests' calls in the workers.
4. uWSGI 2.0.26 without threads (built from source; skipped when absent): the error is logged
   at start-up and the calls run inline.
And one known failure of the server (xfail): uWSGI's immediate stop (--die-on-term) while its
workers are in requests loses their calls.

Each run writes the results of the tests it ran into a copy of tests/results/drain-matrix.md
under the system's temporary directory (after_response/drain-matrix.md), in the section of its
Python, Django and database (the rest of the file is kept); with
``AFTER_RESPONSE_WRITE_MATRIX=1`` it updates tests/results/drain-matrix.md itself, so that a
plain test run leaves the working tree as it was.

``transaction=True``: the servers write through their own connections.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import django
import httpx
import pytest

from after_response import lifecycle
from tests.models import Record
from tests.servers import (
    POSTGRES,
    ROOT,
    WAIT,
    WORKER_PROCESSES,
    Server,
    poll,
    server_database,
    unique,
)

pytestmark = [
    pytest.mark.servers,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

N = 200  # requests, each deferring one call
FEW_MS = 0.005  # seconds each call works before its insert (outcome 3, uWSGI without threads)
# Outcome 1: one worker thread per process, calls of 20 ms: at the signal each process holds
# about 2 s of work, more than any server does of its own accord after SIGTERM (gunicorn's
# gevent worker lets its greenlets run for up to 1 s more).
CALL = 0.02  # seconds
SLOW_CALL = 0.05  # seconds each call works when the budget must run out (outcome 2)
SHORT_BUDGET = 0.5  # seconds: AFTER_RESPONSE_DRAIN_TIMEOUT shorter than the backlog
GRACE = 20  # seconds each server gives its workers to stop (gunicorn's --graceful-timeout...)
BUDGET = 15.0  # seconds: AFTER_RESPONSE_DRAIN_TIMEOUT that fits, below GRACE
CLIENTS = 8  # requests in flight at once
MASTER_N = 40  # requests of outcome 3, whose calls run while the server serves

WSGI_APP = "tests.e2e.wsgi:application"
ASGI_APP = "tests.e2e.asgi:application"
GUNICORN = [
    "-m",
    "gunicorn",
    "--bind",
    "127.0.0.1:0",
    "--workers",
    str(WORKER_PROCESSES),
    "--graceful-timeout",
    str(GRACE),
    "--no-control-socket",  # its default path is shared by every gunicorn of this user
]
# pyuwsgi is uWSGI as a Python extension: this interpreter runs it, no binary to find.
PYUWSGI = ["-c", "import sys, pyuwsgi; sys.exit(pyuwsgi.run())"]
UWSGI_BASE = [
    "--master",
    "--processes",
    str(WORKER_PROCESSES),
    "--http-socket",
    "127.0.0.1:0",  # uWSGI logs "bound to TCP address 127.0.0.1:<port> (port auto-assigned)"
    "--worker-reload-mercy",
    str(GRACE),
    "--disable-logging",  # of requests
    "--module",
    WSGI_APP,
]
# uWSGI 2.0 has no graceful stop signal: SIGTERM reloads it, SIGINT (and SIGTERM with
# --die-on-term) ends each worker at once, and a worker that is in a request then runs no Python
# exit hook at all (see the xfail test below). This hook makes SIGTERM its graceful stop (the
# master FIFO's "q"): each worker finishes its request, then exits through every exit hook.
UWSGI = [*UWSGI_BASE, "--hook-master-start", "unix_signal:15 gracefully_kill_them_all"]
OLD_UWSGI_VERSION = "2.0.26"  # the last release whose threads are off by default
OLD_UWSGI_ENV = "AFTER_RESPONSE_OLD_UWSGI"
OLD_UWSGI = Path(
    f"/tmp/after_response-uwsgi-{OLD_UWSGI_VERSION}-py{sys.version_info.major}."
    f"{sys.version_info.minor}/bin/uwsgi"
)


@dataclasses.dataclass(frozen=True)
class Setup:
    label: str  # as the matrix names it
    command: list[str]
    workers: int = WORKER_PROCESSES  # 0: serves in its own process
    master_imports_app: bool = False


SERVERS = {
    "gunicorn-sync": Setup("gunicorn sync", [*GUNICORN, "--worker-class", "sync", WSGI_APP]),
    "gunicorn-gthread": Setup(
        "gunicorn gthread", [*GUNICORN, "--worker-class", "gthread", "--threads", "4", WSGI_APP]
    ),
    "gunicorn-gevent": Setup("gunicorn gevent", [*GUNICORN, "--worker-class", "gevent", WSGI_APP]),
    "gunicorn-preload": Setup(
        "gunicorn --preload", [*GUNICORN, "--preload", WSGI_APP], master_imports_app=True
    ),
    "uwsgi": Setup(
        "uWSGI (pyuwsgi) --enable-threads",
        [*PYUWSGI, *UWSGI, "--enable-threads"],
        master_imports_app=True,
    ),
    "uwsgi-lazy-apps": Setup(
        "uWSGI (pyuwsgi) --enable-threads --lazy-apps",
        [*PYUWSGI, *UWSGI, "--enable-threads", "--lazy-apps"],
    ),
    "uvicorn": Setup(
        "uvicorn, after_response.asgi",
        [
            "-m",
            "uvicorn",
            ASGI_APP,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--workers",
            str(WORKER_PROCESSES),
            "--timeout-graceful-shutdown",
            str(GRACE),
        ],
    ),
    "daphne": Setup(
        "daphne, after_response.asgi",
        ["-m", "daphne", "-b", "127.0.0.1", "-p", "0", ASGI_APP],
        workers=0,
    ),
}
MASTER_IMPORTS_APP = [kind for kind, setup in SERVERS.items() if setup.master_imports_app]
STOP_SIGNAL = signal.SIGTERM  # the graceful stop of every server above

UNDONE = re.compile(
    r"^\[(\d+)\] ERROR after_response: after_response did not finish within [\d.]+ s at "
    r"shutdown: (\d+) call\(s\) still running \(.*?\), (\d+) never started",
    re.MULTILINE,
)
UNDONE_TEXT = "after_response did not finish within"
PROBLEM_LINE = re.compile(r"Traceback|Exception ignored|\bERROR\b|\bCRITICAL\b")


# -- running a server ------------------------------------------------------------------------


def serve(kind: str, tmp_path: Path, **env: str) -> Server:
    setup = SERVERS[kind]
    return Server(
        kind,
        setup.command,
        tmp_path / "server.log",
        server_database(kind),
        workers=setup.workers,
        stop_signal=STOP_SIGNAL,
        DJANGO_SETTINGS_MODULE="tests.e2e.drain_settings",
        **env,
    )


@dataclasses.dataclass
class Run:
    server: Server
    gate: Path
    prefix: str  # of the names of this run's rows
    killed: list[int] = dataclasses.field(default_factory=list)

    def rows(self) -> int:
        return Record.objects.filter(name__startswith=self.prefix).count()

    def fire(self, n: int, seconds: float) -> None:
        """``n`` requests, ``CLIENTS`` at a time; each defers one call."""
        names = [f"{self.prefix}-{i}" for i in range(n)]
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            responses = pool.map(self._send(self.server, seconds), names)
            for name, response in zip(names, responses, strict=True):
                assert (response.status_code, response.text) == (200, name), self.server.explain(
                    f"{name}: {response.status_code} {response.text[:200]}"
                )

    @staticmethod
    def _send(server: Server, seconds: float) -> Callable[[str], httpx.Response]:
        # One client per request: an httpx.Client shared by the threads failed once in CI with
        # "ReadError: [Errno 9] Bad file descriptor" on the client's side.
        def send(name: str) -> httpx.Response:
            with server.client() as client:
                try:
                    return client.get(f"/insert/{name}/", params={"seconds": seconds})
                except httpx.RemoteProtocolError:
                    # pyuwsgi 2.0.30 now and then closes a connection without answering while
                    # many calls wait at the gate: no log line, its request counter skips one,
                    # and the shutdown report counts one call fewer. The request never reached
                    # Django, so it is sent again; had it deferred its call, the extra row
                    # would fail the test.
                    return client.get(f"/insert/{name}/", params={"seconds": seconds})

        return send


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Run]:
    """A Run whose calls wait for its gate. At teardown the server is stopped, whatever
    happened: the stop signal, then the gate, then a bounded wait for every process."""
    run = Run(server=None, gate=tmp_path / "gate", prefix=unique("call"))  # type: ignore[arg-type]
    yield run
    if run.server is not None:  # already stopped, unless the test failed first
        run.server.send_stop_signal()
        run.gate.touch()
        run.server.wait_for_exit()


def stop_then_open_the_gate(run: Run) -> None:
    """Stop signal, right after the last response; then let the calls go. Waits (bounded) for
    every process of the server to have exited: what is not in the table now never will be."""
    run.server.send_stop_signal()
    run.gate.touch()
    run.killed = run.server.wait_for_exit()
    assert not run.killed, run.server.explain(f"had to SIGKILL {run.killed}: the stop hung")


def problems(log: str, *expected: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if PROBLEM_LINE.search(line) and not any(text in line for text in expected)
    ]


def rows_by_pid(prefix: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for value in Record.objects.filter(name__startswith=prefix).values_list("value", flat=True):
        counts[int(value)] = counts.get(int(value), 0) + 1
    return counts


# -- 1, 2, 3 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_a_graceful_stop_runs_every_accepted_call(kind: str, gated: Run) -> None:
    gated.server = server = serve(
        kind,
        gated.gate.parent,
        AFTER_RESPONSE_E2E_GATE=str(gated.gate),
        AFTER_RESPONSE_E2E_DRAIN_TIMEOUT=str(BUDGET),
        AFTER_RESPONSE_E2E_WORKERS="1",
    )
    server.wait_until_ready()
    gated.fire(N, CALL)
    assert gated.rows() == 0, "a call ran before the stop signal: the gate is broken"
    stop_then_open_the_gate(gated)

    log = server.log()
    assert gated.rows() == N, server.explain(f"{N - gated.rows()} of {N} accepted calls lost")
    assert set(rows_by_pid(gated.prefix)) <= set(server.worker_pids), "run outside the workers"
    assert not problems(log), server.explain("the server logged an error")


@pytest.mark.parametrize("kind", SERVERS)
def test_a_short_drain_budget_reports_what_it_left_undone(kind: str, gated: Run) -> None:
    gated.server = server = serve(
        kind,
        gated.gate.parent,
        AFTER_RESPONSE_E2E_GATE=str(gated.gate),
        AFTER_RESPONSE_E2E_DRAIN_TIMEOUT=str(SHORT_BUDGET),
    )
    server.wait_until_ready()
    gated.fire(N, SLOW_CALL)
    assert gated.rows() == 0, "a call ran before the stop signal: the gate is broken"
    stop_then_open_the_gate(gated)

    log = server.log()
    reports = [tuple(map(int, found)) for found in UNDONE.findall(log)]
    pids = [pid for pid, _, _ in reports]
    assert reports, server.explain("no process said what it left undone")
    assert len(pids) == len(set(pids)), server.explain("a process reported twice")
    assert set(pids) <= set(server.worker_pids), server.explain("reported outside the workers")
    abandoned = sum(running for _, running, _ in reports)
    not_started = sum(never for _, _, never in reports)
    # Each worker process can finish about SHORT_BUDGET / SLOW_CALL calls per thread: far
    # fewer than N.
    assert not_started > 0, server.explain("the budget was not shorter than the backlog")
    rows = gated.rows()
    assert N - not_started - abandoned <= rows <= N - not_started, server.explain(
        f"{rows} rows, {N} calls, {abandoned} abandoned while running, {not_started} not started"
    )
    assert not problems(log, UNDONE_TEXT), server.explain("the server logged another error")


@pytest.mark.parametrize("kind", MASTER_IMPORTS_APP)
def test_work_deferred_in_a_master_imported_app_runs_in_the_workers(kind: str, gated: Run) -> None:
    imported = unique("imported")
    gated.server = server = serve(
        kind, gated.gate.parent, AFTER_RESPONSE_E2E_DEFER_AT_IMPORT=imported
    )
    server.wait_until_ready()
    master = server.process.pid
    assert Record.objects.get(name=imported).value == str(master), "not run in the master"

    gated.fire(MASTER_N, FEW_MS)
    # No gate: the workers' pools run the calls while the server serves, not only at exit.
    poll(
        lambda: gated.rows() == MASTER_N,
        WAIT,
        lambda: server.explain(f"{gated.rows()} of {MASTER_N} calls ran in the workers"),
    )
    by_pid = rows_by_pid(gated.prefix)
    assert master not in by_pid, "the master ran the workers' calls"
    assert set(by_pid) <= set(server.worker_pids)
    stop_then_open_the_gate(gated)
    assert not problems(server.log()), server.explain("the server logged an error")


@pytest.mark.xfail(
    strict=True,
    reason="uWSGI 2.0's immediate stop (SIGINT, or SIGTERM with --die-on-term) ends a worker "
    "that is in a request without any Python exit hook: its uwsgi_python_atexit() returns at "
    "once for a busy worker (plugins/python/python_plugin.c), so uwsgi.atexit, threading's and "
    "atexit's hooks never run and the worker's accepted calls are lost without a word. Use the "
    "graceful stop (UWSGI above) instead.",
)
def test_uwsgi_die_on_term_during_requests(gated: Run) -> None:
    kind = "uwsgi-die-on-term"
    gated.server = server = Server(
        kind,
        [*PYUWSGI, *UWSGI_BASE, "--enable-threads", "--die-on-term"],
        gated.gate.parent / "server.log",
        server_database(kind),
        stop_signal=STOP_SIGNAL,
        DJANGO_SETTINGS_MODULE="tests.e2e.drain_settings",
        AFTER_RESPONSE_E2E_GATE=str(gated.gate),
        AFTER_RESPONSE_E2E_DRAIN_TIMEOUT=str(BUDGET),
    )
    server.wait_until_ready()
    gated.fire(N, FEW_MS)
    with contextlib.ExitStack() as held:
        # One request in flight in each worker process (each serves one at a time): a stream
        # whose first chunk has arrived and whose view then waits (tests/e2e/views.py).
        for _ in range(WORKER_PROCESSES):
            client = held.enter_context(server.client())
            response = held.enter_context(client.stream("GET", f"/held-stream/{unique('held')}/"))
            assert response.status_code == 200
            next(response.iter_raw())
        assert gated.rows() == 0, "a call ran before the stop signal: the gate is broken"
        stop_then_open_the_gate(gated)
    assert gated.rows() == N, server.explain(
        f"{N - gated.rows()} of {N} accepted calls lost, "
        f"{len(UNDONE.findall(server.log()))} process(es) said so"
    )


# -- uWSGI without threads -------------------------------------------------------------------


def old_uwsgi() -> Path:
    """uWSGI 2.0.26 built for this Python: $AFTER_RESPONSE_OLD_UWSGI, or where this builds it:

    python -m venv /tmp/after_response-uwsgi-2.0.26-py3.11
    /tmp/after_response-uwsgi-2.0.26-py3.11/bin/pip install uwsgi==2.0.26
    """
    if sys.version_info >= (3, 13):
        pytest.skip(
            f"uWSGI {OLD_UWSGI_VERSION} does not build for Python 3.13 (its Python plugin "
            "predates it): run this test with Python 3.11 or 3.12"
        )
    binary = Path(os.environ.get(OLD_UWSGI_ENV) or OLD_UWSGI)
    if not binary.is_file():
        pytest.skip(
            f"no uWSGI {OLD_UWSGI_VERSION} binary at {binary}: build it with python -m venv "
            f"{binary.parent.parent} && {binary.parent}/pip install uwsgi=={OLD_UWSGI_VERSION}, "
            f"or set {OLD_UWSGI_ENV}"
        )
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=WAIT, check=True
    ).stdout.strip()
    if version != OLD_UWSGI_VERSION:
        pytest.skip(f"{binary} is uWSGI {version}, not {OLD_UWSGI_VERSION}")
    return binary


@pytest.mark.slow
def test_uwsgi_without_threads_logs_an_error_and_runs_calls_inline(gated: Run) -> None:
    binary = old_uwsgi()
    tmp_path = gated.gate.parent
    # No gate: inline calls run in the request's own worker, as its response closes.
    gated.server = server = Server(
        "uwsgi-2.0.26",
        ["--home", sys.prefix, *UWSGI],  # no --enable-threads
        tmp_path / "server.log",
        server_database("uwsgi-2.0.26"),
        program=[str(binary)],
        stop_signal=STOP_SIGNAL,
        DJANGO_SETTINGS_MODULE="tests.e2e.drain_settings",
    )
    server.wait_until_ready()
    assert lifecycle.UWSGI_WITHOUT_THREADS_MESSAGE in server.log(), server.explain(
        "no error at start-up"
    )

    gated.fire(MASTER_N, FEW_MS)
    poll(
        lambda: gated.rows() == MASTER_N,
        WAIT,
        lambda: server.explain(f"{gated.rows()} of {MASTER_N} inline calls ran"),
    )
    with server.client() as client:
        stats = client.get("/stats/").json()  # of the worker process that answers
    assert stats["mode"] == lifecycle.UWSGI_WITHOUT_THREADS, stats
    assert stats["problems"] == [lifecycle.UWSGI_WITHOUT_THREADS_MESSAGE], stats
    assert stats["workers"] == 0, stats
    stop_then_open_the_gate(gated)
    assert set(rows_by_pid(gated.prefix)) <= set(server.worker_pids)
    assert not problems(server.log(), lifecycle.UWSGI_WITHOUT_THREADS_MESSAGE), server.explain(
        "the server logged another error"
    )


# -- the matrix ------------------------------------------------------------------------------


MATRIX = ROOT / "tests" / "results" / "drain-matrix.md"  # the tracked results
WRITE_MATRIX_ENV = "AFTER_RESPONSE_WRITE_MATRIX"  # =1: a run updates MATRIX itself
SCRATCH_MATRIX = Path(tempfile.gettempdir()) / "after_response" / "drain-matrix.md"
COLUMNS = [
    f"1. {N} calls, stop: {N} rows",
    f"2. {SHORT_BUDGET} s budget: undone calls logged, rows within",
    "3. master-imported app: calls run in the workers",
    "4. no threads: error at start-up, calls inline",
]
# Each test's column, and its rows (its parameters, or the one row of a test without any).
CELLS = {
    test_a_graceful_stop_runs_every_accepted_call.__name__: (0, list(SERVERS)),
    test_a_short_drain_budget_reports_what_it_left_undone.__name__: (1, list(SERVERS)),
    test_work_deferred_in_a_master_imported_app_runs_in_the_workers.__name__: (
        2,
        MASTER_IMPORTS_APP,
    ),
    test_uwsgi_die_on_term_during_requests.__name__: (0, ["uwsgi-die-on-term"]),
    test_uwsgi_without_threads_logs_an_error_and_runs_calls_inline.__name__: (
        3,
        ["uwsgi-2.0.26"],
    ),
}
ROW_LABELS = {
    **{kind: setup.label for kind, setup in SERVERS.items()},
    "uwsgi-die-on-term": "uWSGI (pyuwsgi) --die-on-term, stopped while in requests",
    "uwsgi-2.0.26": f"uWSGI {OLD_UWSGI_VERSION} (from source), no --enable-threads",
}


class MatrixRecorder:
    """A plugin registered for the session: collects this file's results."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str], str] = {}  # (test, row) -> cell

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        path, _, test = report.nodeid.partition("::")
        if Path(path).name != Path(__file__).name:
            return
        name, _, param = test.partition("[")
        if name not in CELLS:
            return
        key = (name, param.rstrip("]") or CELLS[name][1][0])
        if report.when == "call" or not report.passed:
            if key in self.cells and self.cells[key] != "pass":
                return  # the first failure (e.g. the call's, not its teardown's) says it
            self.cells[key] = self.cell(report)

    @staticmethod
    def cell(report: pytest.TestReport) -> str:
        if hasattr(report, "wasxfail"):
            return "xfail" if report.skipped else "XPASS"
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            return "skipped: " + reason.removeprefix("Skipped: ").split(":")[0]
        return "pass" if report.passed else f"FAIL ({report.when})"


@pytest.fixture(scope="session", autouse=True)
def drain_matrix(request: pytest.FixtureRequest) -> Iterator[None]:
    recorder = MatrixRecorder()
    request.config.pluginmanager.register(recorder, "after_response_drain_matrix")
    yield
    request.config.pluginmanager.unregister(recorder)
    if recorder.cells:
        write_matrix(recorder.cells, matrix_target())


def matrix_target() -> Path:
    """MATRIX when asked for (``AFTER_RESPONSE_WRITE_MATRIX=1``), else a scratch copy."""
    return MATRIX if os.environ.get(WRITE_MATRIX_ENV) == "1" else SCRATCH_MATRIX


def environment() -> str:
    database = "PostgreSQL" if POSTGRES else "SQLite"
    python = ".".join(map(str, sys.version_info[:2]))
    return f"Python {python}, Django {'.'.join(map(str, django.VERSION[:2]))}, {database}"


def versions() -> str:
    names = ["gunicorn", "gevent", "pyuwsgi", "uvicorn", "daphne"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def write_matrix(cells: dict[tuple[str, str], str], target: Path) -> None:
    """Update this environment's section with the cells that ran; keep the rest of the file
    (a run of part of this file, e.g. CI's tiers, updates only its own cells). The file is
    ``target`` if it exists, else the tracked MATRIX."""
    source = target if target.exists() else MATRIX
    sections = {}
    if source.exists():
        for part in source.read_text().split("\n## ")[1:]:
            sections["## " + part.split("\n", 1)[0]] = "## " + part.rstrip("\n") + "\n"
    heading = f"## {environment()}"
    header = "| server | " + " | ".join(COLUMNS) + " |"

    table = {row: ["n/a"] * len(COLUMNS) for row in ROW_LABELS}
    for column, rows in CELLS.values():
        for row in rows:
            table[row][column] = "not run"
    rows_by_label = {label: row for row, label in ROW_LABELS.items()}
    previous = sections.get(heading, "").splitlines()
    if header in previous:  # the same columns: keep what this run did not redo
        for line in previous[previous.index(header) + 2 :]:
            label, *values = (value.strip() for value in line.strip("| ").split(" | "))
            if label in rows_by_label and len(values) == len(COLUMNS):
                table[rows_by_label[label]] = values
    for (test, row), cell in cells.items():
        table[row][CELLS[test][0]] = cell

    lines = [
        header,
        "|" + " --- |" * (len(COLUMNS) + 1),
        *(f"| {ROW_LABELS[row]} | " + " | ".join(values) + " |" for row, values in table.items()),
    ]
    sections[heading] = f"{heading}\n\n{versions()}\n\n" + "\n".join(lines) + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    partial.write_text(INTRO + "".join("\n" + sections[key] for key in sorted(sections)))
    partial.replace(target)  # parallel runs: the last one wins, none reads half a file


INTRO = """\
# Graceful stop, server by server

Written by `AFTER_RESPONSE_WRITE_MATRIX=1 python -m pytest tests/test_drain.py` (issue 3; without
the variable a run writes a copy under the system's temporary directory): each server runs on
127.0.0.1 with two worker processes (daphne: one), each request defers one database insert, the
calls wait until the server has been sent `SIGTERM` right after the last response (uWSGI: with
`--hook-master-start "unix_signal:15 gracefully_kill_them_all"`), and once every process has
exited the test counts the rows. A run rewrites the cells it ran in the section of its Python,
Django and database; the rest is kept. The docstrings of tests/test_drain.py say what each
column asserts; `xfail` is a known failure of the server, with its reason there.
"""
