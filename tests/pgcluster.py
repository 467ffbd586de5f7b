"""A private PostgreSQL cluster that a test may stop, restart and cut connections on.

``initdb`` in a temporary directory, on a port of its own, listening on 127.0.0.1 and on a socket
in that directory: the shared server on 5432 is never touched. As root (initdb refuses to run as
root) the cluster runs as the ``postgres`` user, through ``runuser``. Every command has a time
limit; ``destroy()`` stops the server and removes the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from tests import recorder

RUN_AS = "postgres"  # initdb refuses root: the cluster then runs as this user
COMMAND_TIMEOUT = 60.0  # seconds, for initdb and each pg_ctl command
PG_CTL_WAIT = 30  # seconds pg_ctl waits for the server to start or stop
CONNECT_TIMEOUT = 5  # seconds
TERMINATE_TIMEOUT_MS = 5000  # how long pg_terminate_backend waits for the session to end
PORT_ATTEMPTS = 3  # another program may take the free port before the server binds it
DATABASE = "faults"
CONFIG = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
max_connections = 50
shared_buffers = 16MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
"""


class Unavailable(Exception):
    """Why no private cluster can be made here (the tests that need one skip with it)."""


def _bindir() -> Path:
    """The newest PostgreSQL server binaries: Debian's layout, else initdb on PATH."""

    def version(path: str) -> tuple[int, ...]:
        number = Path(path).parent.parent.name
        return tuple(int(part) for part in number.split(".") if part.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    initdb = found[-1] if found else shutil.which("initdb")
    if initdb is None:
        raise Unavailable("initdb is neither in /usr/lib/postgresql/*/bin nor on PATH")
    bindir = Path(initdb).parent
    if not (bindir / "pg_ctl").exists():
        raise Unavailable(f"no pg_ctl next to {initdb}")
    return bindir


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    def __init__(self) -> None:
        self.bindir = _bindir()
        self.prefix: list[str] = []
        user = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(RUN_AS)
            except KeyError:
                raise Unavailable(
                    f"initdb refuses to run as root and there is no {RUN_AS!r} user to run it as"
                ) from None
            runuser = shutil.which("runuser")
            if runuser is None:
                raise Unavailable("running as root, and no runuser to run initdb as another user")
            self.prefix = [runuser, "-u", RUN_AS, "--"]
        self.root = Path(tempfile.mkdtemp(prefix="after_response_pg_"))
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.running = False

    # -- life cycle -----------------------------------------------------------------------

    @classmethod
    def create(cls) -> Cluster:
        cluster = cls()
        try:
            cluster._run(
                "initdb",
                "-D",
                str(cluster.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            cluster._start_on_a_free_port()
            with cluster.admin() as admin:
                admin.execute(f"CREATE DATABASE {DATABASE}")
            with cluster.admin(DATABASE) as admin:
                admin.execute("CREATE TABLE marks (name text PRIMARY KEY, backend int NOT NULL)")
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def _start_on_a_free_port(self) -> None:
        config = self.data / "postgresql.conf"
        original = config.read_text()
        for attempt in range(PORT_ATTEMPTS):
            self.port = _free_port()
            config.write_text(original + CONFIG.format(port=self.port, sockets=self.root))
            try:
                self.start()
                return
            except subprocess.CalledProcessError:
                if attempt == PORT_ATTEMPTS - 1 or "could not bind" not in self.log_tail():
                    raise

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(PG_CTL_WAIT),
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session (their queries fail), like a restart in production."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(PG_CTL_WAIT), "stop")
        self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [*self.prefix, str(self.bindir / program), *args]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        # cwd: the postgres user may not be allowed into the test's working directory.
        result = subprocess.run(
            command,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if result.returncode:
            raise subprocess.CalledProcessError(
                result.returncode,
                command,
                result.stdout,
                f"{result.stderr}\n--- server log ---\n{self.log_tail()}",
            )

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # -- what the tests look at and do ----------------------------------------------------

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """A Django DATABASES entry for this cluster."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": DATABASE,
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **overrides,
        }

    @contextlib.contextmanager
    def admin(self, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
        """A superuser connection of the test's own, opened for one use (restarts break it)."""
        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
        ) as connection:
            yield connection

    def backends(self, application_name: str) -> list[tuple[int, str | None, str | None]]:
        """(pid, state, wait_event) of the sessions with this application_name."""
        with self.admin() as admin:
            rows = admin.execute(
                "SELECT pid, state, wait_event FROM pg_stat_activity "
                "WHERE application_name = %s ORDER BY pid",
                [application_name],
            ).fetchall()
        return [(int(pid), state, event) for pid, state, event in rows]

    def terminate(self, application_name: str) -> list[int]:
        """pg_terminate_backend every session with this application_name, and wait until they
        have ended (PostgreSQL 14+: before, only until they were signalled); their pids."""
        with self.admin() as admin:
            wait = ", %s" if admin.info.server_version >= 140000 else ""
            # In the select list, not the WHERE clause: there PostgreSQL may call it for every
            # session before it filters them.
            rows = admin.execute(
                f"SELECT pid, pg_terminate_backend(pid{wait}) FROM pg_stat_activity "
                "WHERE application_name = %s",
                [TERMINATE_TIMEOUT_MS, application_name] if wait else [application_name],
            ).fetchall()
        return [int(pid) for pid, terminated in rows if terminated]

    def clear_marks(self) -> None:
        with self.admin(DATABASE) as admin:
            admin.execute("TRUNCATE marks")

    def marks(self) -> dict[str, int]:
        """What the deferred calls wrote: name -> the backend pid that wrote it."""
        with self.admin(DATABASE) as admin:
            return dict(admin.execute("SELECT name, backend FROM marks").fetchall())

    def wait_for_backends(
        self, application_name: str, count: int, timeout: float, *, wait_event: str | None = None
    ) -> list[int]:
        """Poll until ``count`` sessions (in ``wait_event``, if given) exist; fail at the bound."""

        def matching() -> list[tuple[int, str | None, str | None]]:
            found = self.backends(application_name)
            return [row for row in found if wait_event is None or row[2] == wait_event]

        found = recorder.settled(matching, lambda rows: len(rows) == count, timeout)
        assert len(found) == count, (
            f"expected {count} sessions of {application_name}"
            f"{f' in {wait_event}' if wait_event else ''}, found {self.backends(application_name)}"
        )
        return [pid for pid, _, _ in found]
