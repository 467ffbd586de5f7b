"""What every benchmark shares: Django set-up, databases, driving the WSGI handler, statistics."""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
CONNECT_TIMEOUT = 1.0  # seconds, for "is it up?" probes

Result = dict[str, Any]


# -- services ------------------------------------------------------------------------------


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError:
        return False
    return True


def postgres_reachable() -> bool:
    return reachable(PG_HOST, PG_PORT)


def pg_admin(sql: str) -> list[tuple[Any, ...]]:
    """Run one statement on the maintenance database, autocommit; return its rows."""
    import psycopg

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        cursor = conn.execute(sql)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    """A new, empty database of this kind for one benchmark process; dropped afterwards."""
    if kind == "postgres":
        name = f"after_response_bench_{os.getpid()}"
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg_admin(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    with tempfile.TemporaryDirectory(prefix="after_response_bench_") as directory:
        yield str(Path(directory) / "bench.sqlite3")


def setup_django(
    db: str = "sqlite",
    db_name: str = "",
    after_response: dict[str, Any] | None = None,
    pg_name: str = "",
) -> None:
    """Configure Django with benchmarks.settings for this database and create the tables."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    os.environ["BENCH_DB"] = db
    os.environ["BENCH_DB_NAME"] = db_name
    os.environ["BENCH_PG_NAME"] = pg_name
    os.environ["BENCH_AFTER_RESPONSE"] = json.dumps(after_response or {})
    import django
    from django.core.management import call_command

    django.setup()
    from django.db import connections

    from .models import Row

    for alias in ("default", "pg") if pg_name else ("default",):
        call_command("migrate", run_syncdb=True, verbosity=0, database=alias)
        Row.objects.using(alias).get_or_create(pk=1, defaults={"name": "one"})
    connections.close_all()


def server_env(db: str, db_name: str, after_response: dict[str, Any]) -> dict[str, str]:
    """The environment of a server process that uses the same settings and database."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        "BENCH_DB": db,
        "BENCH_DB_NAME": db_name,
        "BENCH_AFTER_RESPONSE": json.dumps(after_response),
    }


# -- driving Django like a WSGI server -----------------------------------------------------


def environ(path: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    if not status.startswith("200"):
        raise RuntimeError(f"benchmark request failed: {status}")


def serve(handler: Callable[..., Any], path: str) -> None:
    """One request, as a WSGI server does it: call, write the body, close the response."""
    response = handler(environ(path), _start_response)
    try:
        for _chunk in response:
            pass
    finally:
        response.close()


def handlers(
    middleware: Sequence[str] = (),
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Two WSGIHandlers: with after_response's middleware, and with ``middleware`` instead.

    The middleware connects no signal receiver that runs for a WSGI request (its one receiver
    is for ASGIHandler), so the two differ by the middleware alone, as two processes would.
    """
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    with_middleware = WSGIHandler()
    with override_settings(MIDDLEWARE=list(middleware)):
        plain = WSGIHandler()
    return with_middleware, plain


# -- statistics and timing -----------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median and spread (quartiles, extremes) of per-round values."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median": statistics.median(ordered),
        "q1": q1,
        "q3": q3,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


def rotated(items: Sequence[str], round_index: int) -> list[str]:
    """The sides in a different order each round, so that none always goes first."""
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Collect before a timed batch, so no side pays for the garbage of the one before."""
    gc.collect()
    yield


def timer_overhead_ns(samples: int = 20_000) -> float:
    """The cost of one perf_counter_ns() pair, subtracted from each timed span."""
    clock = time.perf_counter_ns
    spans = []
    for _ in range(samples):
        t0 = clock()
        t1 = clock()
        spans.append(t1 - t0)
    return float(statistics.median(spans))


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def fmt_spread(stats: dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
    """``median [q1-q3]``, the way every table shows a value measured over rounds."""
    return (
        f"{stats['median'] * scale:.{digits}f} "
        f"[{stats['q1'] * scale:.{digits}f}-{stats['q3'] * scale:.{digits}f}]"
    )


# -- the command line of each benchmark module ---------------------------------------------


def main(run: Callable[..., Result]) -> None:
    """``python -m benchmarks.NAME [--smoke] [--no-celery] --json PATH``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", required=True, help="where to write the result")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it run at all")
    parser.add_argument("--no-celery", action="store_true", help="leave Celery out")
    args = parser.parse_args()
    started = time.monotonic()
    result = run(smoke=args.smoke, celery=not args.no_celery)
    result["seconds"] = round(time.monotonic() - started, 1)
    Path(args.json).write_text(json.dumps(result, indent=1))
