"""5. PostgreSQL connections: backends held during and after requests that defer an ORM query.

Requests back to back through ``WSGIHandler``, each deferring ``Row.objects.filter(pk=1)
.exists()``: with after_response (its middleware, 4 workers, Django's default
``CONN_MAX_AGE = 0``, and again with 60), with one ``threading.Thread(...).start()`` per call,
and with a ``ThreadPoolExecutor(4)``. A sampler thread counts this database's backends in
``pg_stat_activity`` (its own connection excluded) from the first request until the calls have
all run, then for a while after. Calls that fail (``too many clients already`` when the
threads exceed ``max_connections``) are counted, not hidden.
"""

from __future__ import annotations

import concurrent.futures
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

from . import common

WORKERS = 4
LIBRARY = "after_response (CONN_MAX_AGE=0)"
LIBRARY_60 = "after_response, CONN_MAX_AGE=60"
THREADS, TPE = "Thread.start per call", "ThreadPoolExecutor(4)"
SAMPLE_EVERY = 0.01  # seconds
WAIT = 300.0  # seconds, bound of the wait for the calls
# after: seconds watched after the last call ran; settle: for closed backends to go
FULL = {"requests": 5000, "after": 1.0, "settle": 0.3}
SMOKE = {"requests": 50, "after": 0.1, "settle": 0.05}


class Sampler:
    """Counts the backends connected to one database, from a thread of its own."""

    def __init__(self, db_name: str) -> None:
        import psycopg

        self.db_name = db_name
        self.conn = psycopg.connect(
            host=common.PG_HOST, port=common.PG_PORT, user=common.PG_USER, dbname="postgres",
            autocommit=True,
        )  # fmt: skip
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def count(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (self.db_name,),
        ).fetchone()
        return int(row[0]) if row else 0

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.samples.append((round(time.monotonic() - self.started, 3), self.count()))
            self.stop.wait(SAMPLE_EVERY)

    def __enter__(self) -> Sampler:
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def close(self) -> None:
        self.conn.close()


class Failures:
    """Exceptions raised in hand-started threads (threading.excepthook), by message."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: dict[str, int] = {}
        self.previous = threading.excepthook

    def hook(self, args: Any) -> None:
        message = f"{args.exc_type.__name__}: {str(args.exc_value).strip().splitlines()[0]}"
        with self.lock:
            self.messages[message] = self.messages.get(message, 0) + 1

    def __enter__(self) -> Failures:
        threading.excepthook = self.hook
        return self

    def __exit__(self, *exc: object) -> None:
        threading.excepthook = self.previous


def one_side(
    name: str, handler: Callable[..., Any], sizes: dict[str, Any], db_name: str
) -> dict[str, Any]:
    import after_response

    from . import views

    threads: list[threading.Thread] = []
    futures: list[concurrent.futures.Future[None]] = []
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS)
    failures = Failures()

    def start_thread(request: Any) -> None:
        thread = threading.Thread(target=views.small_query)
        thread.start()
        threads.append(thread)

    def submit(request: Any) -> None:
        futures.append(executor.submit(views.small_query))

    views.SINKS["connections"] = {
        LIBRARY: lambda request: request.defer(views.small_query),
        LIBRARY_60: lambda request: request.defer(views.small_query, "persistent"),
        THREADS: start_thread,
        TPE: submit,
    }[name]
    before = after_response.stats()
    sampler = Sampler(db_name)
    try:
        with failures, sampler:
            t0 = time.monotonic()
            for _ in range(sizes["requests"]):
                common.serve(handler, "/defer/connections/1/")
            served = time.monotonic() - t0
            if name in (LIBRARY, LIBRARY_60):
                after_response.drain(WAIT)
            for thread in threads:
                thread.join(WAIT)
            concurrent.futures.wait(futures, WAIT)
            finished = time.monotonic() - t0
            time.sleep(sizes["after"])
            residual = sampler.count()
        gc.collect()
        time.sleep(sizes["settle"])
        residual_after_gc = sampler.count()
        failed = dict(failures.messages)
        for future in futures:
            if future.exception() is not None:
                message = f"{type(future.exception()).__name__}: {future.exception()}"
                failed[message] = failed.get(message, 0) + 1
        if name in (LIBRARY, LIBRARY_60):
            after = after_response.stats()
            if after.failed - before.failed:
                failed["failed deferred calls (see the log)"] = after.failed - before.failed
        executor.shutdown()
        after_shutdown = None  # no pool of its own, or the pool goes on to the next side
        if name in (TPE, LIBRARY_60):
            if name == LIBRARY_60:
                after_response.shutdown(WAIT)  # its workers close their connections as they end
            gc.collect()
            time.sleep(sizes["settle"])
            after_shutdown = sampler.count()
    finally:
        sampler.close()
    samples = sampler.samples
    return {
        "peak": max([count for _, count in samples] + [residual]),
        "residual": residual,
        "residual_after_gc": residual_after_gc,
        "after_pool_shutdown": after_shutdown,
        "served_seconds": served,
        "finished_seconds": finished,
        "failed": failed,
        "samples": samples,
    }


def run(smoke: bool = False, celery: bool = True) -> common.Result:
    sizes = SMOKE if smoke else FULL
    if not common.postgres_reachable():
        reason = f"PostgreSQL unreachable at {common.PG_HOST}:{common.PG_PORT}"
        return report({}, sizes, 0, reason)
    max_connections = int(common.pg_admin("SHOW max_connections")[0][0])
    with common.database("postgres") as db_name:
        common.setup_django("postgres", db_name, {"WORKERS": WORKERS})
        with_middleware, plain = common.handlers()
        measured = {}
        # after_response's pool is shut down after the last side, to show what that leaves.
        for name in (THREADS, TPE, LIBRARY, LIBRARY_60):
            library = name in (LIBRARY, LIBRARY_60)
            handler = with_middleware if library else plain
            measured[name] = one_side(name, handler, sizes, db_name)
        from django.db import connections

        import after_response

        after_response.shutdown(WAIT)
        connections.close_all()
    return report(measured, sizes, max_connections, None)


def report(
    measured: dict[str, dict[str, Any]],
    sizes: dict[str, int],
    max_connections: int,
    skipped: str | None,
) -> common.Result:
    rows = []
    for name, data in measured.items():
        failed = sum(data["failed"].values())
        reasons = "; ".join(f"{count} x {message}" for message, count in data["failed"].items())
        rows.append(
            [
                f"**{name}**" if name in (LIBRARY, LIBRARY_60) else name,
                data["peak"],
                data["residual"],
                data["residual_after_gc"],
                "-" if data["after_pool_shutdown"] is None else data["after_pool_shutdown"],
                f"{data['served_seconds']:.1f} / {data['finished_seconds']:.1f}",
                f"{failed} ({reasons})" if failed else "0",
            ]
        )
    notes = [
        f"{sizes['requests']} requests per side, one ORM query deferred by each; PostgreSQL "
        f"max_connections = {max_connections}; CONN_MAX_AGE = 0 (Django's default). Backends "
        f"of the benchmark's database sampled every {SAMPLE_EVERY * 1000:.0f} ms from the first "
        f"request ('peak': the most seen), until every call ran and {sizes['after']} s after, "
        "after gc.collect(), and after the pool's shutdown.",
        "Hand-started threads: Django never closes their connections; each one goes when its "
        "thread's connection object is collected. The ThreadPoolExecutor's threads keep theirs "
        "for good. With CONN_MAX_AGE=60 after_response's workers keep theirs like Django's "
        "request threads do: closed when a later call finds them older than that.",
        "One run per side (counts, not timings).",
    ]
    if skipped:
        notes.append(f"Skipped: {skipped}.")
    return {
        "name": "connections",
        "title": "5. PostgreSQL connections held by deferred ORM calls",
        "tables": [
            {
                "columns": [
                    "side",
                    "peak backends",
                    f"{sizes['after']} s after",
                    "after gc",
                    "after pool shutdown",
                    "s to serve / to finish",
                    "failed calls",
                ],
                "rows": rows,
            }
        ]
        if measured
        else [],
        "targets": [],
        "notes": notes,
        "skipped": skipped,
        "chart": {
            "max_connections": max_connections,
            "samples": {name: data["samples"] for name, data in measured.items()},
        },
        "raw": {
            name: {k: v for k, v in data.items() if k != "samples"}
            for name, data in measured.items()
        },
    }


def chart(result: common.Result, path: str) -> None:
    import matplotlib.pyplot as plt

    data = result["chart"]
    fig, ax = plt.subplots(figsize=(9, 4))
    for name, samples in data["samples"].items():
        ax.plot([at for at, _ in samples], [count for _, count in samples], label=name)
    if data["max_connections"]:
        ax.axhline(data["max_connections"], color="C3", linestyle="--", label="max_connections")
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("PostgreSQL backends")
    ax.set_title("Backends while requests defer ORM queries, and after")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    common.main(run)
