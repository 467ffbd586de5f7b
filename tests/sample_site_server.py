"""Serve the demo in sample_site/ with gunicorn and its config, as ``bash sample_site/run`` does.

The server runs on this test's Python (not .venv-demo), with its SQLite file, uploads, mail and
published files in a temporary directory, on an ephemeral port. Tests observe it from outside:
over HTTP, and by reading those files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

SITE = Path(__file__).resolve().parent.parent / "sample_site"
START_TIMEOUT = 30.0  # seconds for migrate, and for gunicorn to listen
STOP_TIMEOUT = 10.0  # seconds from SIGTERM to SIGKILL
POLL_INTERVAL = 0.05  # seconds
REQUEST_TIMEOUT = 10.0  # seconds
WORKERS = 2  # gunicorn.conf.py's worker processes

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Server:
    url: str
    db: Path
    data: Path  # SAMPLE_SITE_DATA: uploads/, mail/, public/
    log: Path

    def rows(self, sql: str, *params: object) -> list[dict[str, Any]]:
        """Read the demo's database, as another process would."""
        with contextlib.closing(sqlite3.connect(self.db, timeout=5)) as connection:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute(sql, params)]

    def worker_pids(self) -> list[str]:
        return re.findall(r"Booting worker with pid: (\d+)", self.log.read_text())

    def client(self) -> httpx.Client:
        # No keep-alive. gunicorn's gthread worker closes an idle connection after `keepalive`
        # (2 s): a test that waits about that long for a deferred call and then reuses the
        # connection races the close and gets "Server disconnected without sending a response"
        # (seen once in CI). A browser retries such a request; a test client should not need to.
        return httpx.Client(
            base_url=self.url,
            timeout=REQUEST_TIMEOUT,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def kill_workers(self) -> list[str]:
        """SIGKILL the worker processes, as the OOM killer would; return once they are dead.

        Their work after the response dies with them; gunicorn's master starts new ones (see
        ``wait_for_workers``). Returns the PIDs of all the workers booted so far.
        """
        booted = self.worker_pids()
        killed = [int(pid) for pid in booted[-WORKERS:]]
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):  # gone already
                os.kill(pid, signal.SIGKILL)
        wait_for("the killed workers dead", lambda: not any(map(_alive, killed)), STOP_TIMEOUT)
        return booted

    def wait_for_workers(self, booted: list[str]) -> None:
        """Wait for the successors of the workers killed after ``booted``."""
        wait_for(
            "new worker processes",
            lambda: len(self.worker_pids()) >= len(booted) + WORKERS,
            START_TIMEOUT,
        )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def serve(directory: Path, **environ: str) -> Iterator[Server]:
    db = directory / "db.sqlite3"
    data = directory / "data"
    env = {
        **os.environ,
        # pytest-django exported tests.settings; manage.py and wsgi.py only setdefault() it.
        "DJANGO_SETTINGS_MODULE": "sample_site.settings",
        "SAMPLE_SITE_DB": str(db),
        "SAMPLE_SITE_DATA": str(data),
        "PORT": "0",
        **environ,
    }
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=SITE,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr

    log = directory / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"],
            cwd=SITE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, to SIGKILL the workers with it
        )
    try:
        yield Server(_wait_for_listening(process, log), db, data, log)
    finally:
        _stop(process)


def _wait_for_listening(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", log.read_text())
        if match:
            return match[1]
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(POLL_INTERVAL)
    pytest.fail(f"gunicorn did not listen within {START_TIMEOUT} s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()  # gunicorn's graceful shutdown
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    """Poll ``probe`` until it returns something other than None (or falsy), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s (last: {value!r})")
        time.sleep(POLL_INTERVAL)
