"""Processes for the end-to-end tests: a database of their own, gunicorn, and db_worker.

Each process runs in its own session (its process group id is its PID), logs to a file and is
stopped by that PID: SIGTERM to its group, then SIGKILL after a bound. Every wait is a bounded
poll.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.servers import poll

ROOT = Path(__file__).resolve().parent.parent.parent
SETTINGS = "tests.tasks_app.settings"
START_TIMEOUT = 30.0  # seconds, for a process to say it is ready
STOP_TIMEOUT = 15.0  # seconds, after SIGTERM, before SIGKILL
COMMAND_TIMEOUT = 120.0  # seconds, for migrate

LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
WORKER_STARTED = re.compile(r"Booting worker with pid: (\d+)")
WORKER_STARTING = re.compile("Starting worker")  # what db_worker logs once it polls


def environment(database: dict[str, Any], backend: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "AFTER_RESPONSE_TASKS_DATABASE": json.dumps(database),
        "AFTER_RESPONSE_TASKS_BACKEND": backend,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }


def manage(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}"


class Process:
    """A process we started, with its log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("wb") as log:  # the child has its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def explain(self, what: str) -> str:
        return f"{what}\n--- {self.name} log ({self.log_path}) ---\n{self.log()[-6000:]}"

    def logged(self, pattern: re.Pattern[str]) -> list[str]:
        if self.process.poll() is not None:
            raise AssertionError(self.explain(f"{self.name} exited with {self.process.returncode}"))
        return pattern.findall(self.log())

    def stop(self) -> bool:
        """SIGTERM (a graceful stop, as in a deploy), SIGKILL to its whole process group after
        a bound; False if it had to be killed."""
        graceful = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                graceful = False
        # Its children (gunicorn's workers) end with it; any left get SIGKILL.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)
        return graceful


class Server(Process):
    """gunicorn (sync workers) on a port the kernel picks."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int) -> None:
        super().__init__(
            "gunicorn",
            [
                "-m",
                "gunicorn",
                "--bind",
                "127.0.0.1:0",
                "--workers",
                str(workers),
                "--graceful-timeout",
                "10",
                "--no-control-socket",  # its default path is shared by every gunicorn of this user
                "--access-logfile",
                "-",
                "django.core.wsgi:get_wsgi_application()",
            ],
            env,
            log_path,
        )
        self.workers = workers
        self.url = ""
        self.worker_pids: list[int] = []

    def wait_until_ready(self) -> None:
        port = poll(
            lambda: self.logged(LISTENING), START_TIMEOUT, lambda: self.explain("no port logged")
        )[0]
        self.url = f"http://127.0.0.1:{port}"
        pids = poll(
            lambda: len(found := self.logged(WORKER_STARTED)) >= self.workers and found,
            START_TIMEOUT,
            lambda: self.explain(f"fewer than {self.workers} workers started"),
        )
        self.worker_pids = [int(pid) for pid in pids]


def db_worker(env: dict[str, str], log_path: Path, worker_id: str) -> Process:
    """django-tasks-db's worker, polling often so that the tests do not wait long."""
    return Process(
        "db_worker",
        [
            "-m",
            "django",
            "db_worker",
            "--interval",
            "0.05",
            "--no-startup-delay",
            "--no-reload",
            "--worker-id",
            worker_id,
        ],
        env,
        log_path,
    )


class Database:
    """A database of the end-to-end project's own, on the engine the test run uses."""

    def __init__(self, test_database: dict[str, Any], name: str, directory: Path) -> None:
        self.engine = test_database["ENGINE"]
        if self.postgres:
            self.settings = {
                key: test_database[key] for key in ("ENGINE", "USER", "PASSWORD", "HOST", "PORT")
            }
            self.settings["NAME"] = name
        else:
            path = str(directory / f"{name}.sqlite3")
            self.settings = {
                "ENGINE": self.engine,
                "NAME": path,
                "OPTIONS": {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
            }
        self.settings["CONN_MAX_AGE"] = 0

    @property
    def postgres(self) -> bool:
        return bool(self.engine == "django.db.backends.postgresql")

    def _server(self) -> Any:
        import psycopg

        s = self.settings
        return psycopg.connect(
            host=s["HOST"],
            port=s["PORT"],
            user=s["USER"],
            password=s["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
        )

    def create(self) -> None:
        if self.postgres:
            with self._server() as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{self.settings["NAME"]}"')
                connection.execute(f'CREATE DATABASE "{self.settings["NAME"]}"')

    def drop(self) -> None:
        if self.postgres:
            with self._server() as connection:
                connection.execute(
                    f'DROP DATABASE IF EXISTS "{self.settings["NAME"]}" WITH (FORCE)'
                )
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(self.settings["NAME"] + suffix).unlink(missing_ok=True)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run a query on a connection of its own (committed data only)."""
        if self.postgres:
            import psycopg

            s = self.settings
            with psycopg.connect(
                host=s["HOST"],
                port=s["PORT"],
                user=s["USER"],
                password=s["PASSWORD"] or None,
                dbname=s["NAME"],
                autocommit=True,
            ) as connection:
                return connection.execute(sql, params).fetchall()
        connection = sqlite3.connect(self.settings["NAME"], timeout=20)
        try:
            return connection.execute(sql.replace("%s", "?"), params).fetchall()
        finally:
            connection.close()
