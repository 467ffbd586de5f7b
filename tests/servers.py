"""Real servers for the end-to-end tests (tests/test_servers.py, tests/test_drain.py).

A server runs the project in tests/e2e/ as a subprocess on 127.0.0.1, on a port the kernel picks
(port 0, read back from the server's log), in a session of its own, against the database
pytest-django created for this run (passed as JSON in the environment). Every wait is a bounded
poll; every server is stopped by PID, with its graceful stop signal, then SIGKILL after a bound.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from django.conf import settings
from django.db import connection

from tests import recorder
from tests.models import Record

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
WAIT = 15.0  # seconds: bound of every poll for something that should happen soon
START_TIMEOUT = 30.0  # seconds, for a server to log its port and boot both workers
STOP_TIMEOUT = 15.0  # seconds, after SIGTERM, before SIGKILL
REQUEST_TIMEOUT = 10.0  # seconds, per HTTP request
WORKER_PROCESSES = 2

# What each server logs once it is bound (gunicorn, uvicorn, uWSGI, daphne), and once per
# worker process it started (gunicorn, uvicorn, uWSGI; daphne serves in its one process).
LISTENING = re.compile(
    r"(?:Listening at: http://|Uvicorn running on http://|bound to TCP address "
    r"|Listening on TCP address )127\.0\.0\.1:(\d+)"
)
WORKER_STARTED = re.compile(
    r"(?:Booting worker with pid: |Started server process \[|spawned uWSGI worker \d+ \(pid: )"
    r"(\d+)"
)
PROBLEM = re.compile(r"Traceback|ERROR|warning", re.IGNORECASE)


def poll(check: Callable[[], T | None], timeout: float, failure: Callable[[], str]) -> T:
    """Call ``check`` until it returns something truthy; fail with ``failure()`` at the deadline."""
    result = recorder.settled(check, bool, timeout)
    if not result:
        raise AssertionError(failure())
    return result


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


# -- processes -------------------------------------------------------------------------------


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of a session: a server started in its own session, and
    every process it forked."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            if os.getsid(pid) == sid and state != "Z":
                members.append(pid)
        except (OSError, IndexError):  # it exited meanwhile
            continue
    return members


class Server:
    """One server process (and its workers), its log file and its URL.

    ``command`` follows ``program`` (this Python by default). ``workers`` is how many worker
    processes it starts, 0 for a server that serves in its own process; ``stop_signal`` is its
    graceful stop.
    """

    def __init__(
        self,
        kind: str,
        command: list[str],
        log_path: Path,
        database: dict[str, Any],
        *,
        program: Sequence[str] = (sys.executable,),
        workers: int = WORKER_PROCESSES,
        stop_signal: signal.Signals = signal.SIGTERM,
        **extra_env: str,
    ) -> None:
        self.kind = kind
        self.log_path = log_path
        self.url = ""
        self.workers = workers
        self.worker_pids: list[int] = []
        self.stop_signal = stop_signal
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.e2e.settings",
            "AFTER_RESPONSE_E2E_DATABASE": json.dumps(database, default=str),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        with log_path.open("wb") as log:  # the child has its own copy of the descriptor
            self.process = subprocess.Popen(
                [*program, *command],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its session id is its PID: finds every worker at stop
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def explain(self, what: str, since: int = 0) -> str:
        log = self.log()[since:]
        return f"{what}\n--- {self.kind} log ({self.log_path}) ---\n{log[-6000:]}"

    def _logged(self, pattern: re.Pattern[str]) -> list[int]:
        if self.process.poll() is not None:
            raise AssertionError(self.explain(f"{self.kind} exited with {self.process.returncode}"))
        return [int(found) for found in pattern.findall(self.log())]

    def wait_until_ready(self) -> None:
        port = poll(lambda: self._logged(LISTENING), START_TIMEOUT, lambda: self.explain("no port"))
        self.url = f"http://127.0.0.1:{port[0]}"
        if self.workers:
            self.worker_pids = poll(
                lambda: len(set(pids := self._logged(WORKER_STARTED))) >= self.workers and pids,
                START_TIMEOUT,
                lambda: self.explain(f"fewer than {self.workers} worker processes started"),
            )
        else:
            self.worker_pids = [self.process.pid]
        members = session_members(self.process.pid)
        assert set(self.worker_pids) <= set(members), self.explain(f"workers not alive: {members}")

        def answers() -> bool:
            try:
                return httpx.get(self.url + "/ready/", timeout=REQUEST_TIMEOUT).status_code == 200
            except httpx.TransportError:
                return False

        poll(answers, START_TIMEOUT, lambda: self.explain(f"{self.url}/ready/ never answered"))

    def client(self) -> httpx.Client:
        # No keep-alive: every request is a new connection, which any worker process may take.
        return httpx.Client(
            base_url=self.url,
            timeout=REQUEST_TIMEOUT,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def stop(self) -> list[int]:
        """The stop signal, then SIGKILL after a bound; return the PIDs that had to be killed."""
        self.send_stop_signal()
        return self.wait_for_exit()

    def send_stop_signal(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)

    def wait_for_exit(self) -> list[int]:
        """Wait, within bounds, for every process of the server to end; SIGKILL those left.

        Returns the PIDs that had to be killed.
        """
        killed = []
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            killed.append(self.process.pid)
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        # Its workers exit with it; any that outlive it by the bound are killed one by one.
        left = recorder.settled(
            lambda: session_members(self.process.pid), lambda members: not members, STOP_TIMEOUT
        )
        for pid in left:
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)
        return killed


# -- the database, as the servers see it -----------------------------------------------------


POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def application_name(kind: str) -> str:
    return f"after_response_e2e_{kind}"


def server_database(kind: str) -> dict[str, Any]:
    """The test database pytest-django created, for the server's settings."""
    current = connection.settings_dict
    database = {key: current[key] for key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT")}
    database["CONN_MAX_AGE"] = 0  # every connection is closed when its request or call ends
    database["OPTIONS"] = dict(current["OPTIONS"])
    if POSTGRES:
        # Tells the server's backends apart from this process's in pg_stat_activity.
        database["OPTIONS"]["application_name"] = application_name(kind)
    return database


def server_backends(server: Server) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, backend_start, left(query, 80) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = %s",
            [connection.settings_dict["NAME"], application_name(server.kind)],
        )
        return cursor.fetchall()


def row(name: str) -> Record | None:
    return Record.objects.filter(name=name).first()
