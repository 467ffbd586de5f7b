"""3. Drain throughput: calls per second through the pool, against ``ThreadPoolExecutor``.

Both pools have the same number of threads. Each round, for each side: the workers are held
busy by gate calls, the backlog is filled with the calls, the gate opens, and the time until
every call has run gives the calls per second. The producer is not timed: this is what the
worker side sustains.

Workloads: a no-op, and a small ORM query (``Row.objects.filter(pk=1).exists()``) on a SQLite
file and on PostgreSQL. after_response runs each call like a request (``close_old_connections``
before and after), so with Django's default ``CONN_MAX_AGE = 0`` each call opens and closes its
connection; it is also measured with ``CONN_MAX_AGE = 60``. The ThreadPoolExecutor's threads do
no such thing: they keep their first connection for good, whatever ``CONN_MAX_AGE`` says (which
is the leak connections.py counts).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import statistics
import threading
import time
from collections.abc import Callable

from . import common

WORKERS = 4
LIBRARY_0 = "after_response, CONN_MAX_AGE=0"
LIBRARY_60 = "after_response, CONN_MAX_AGE=60"
LIBRARY = "after_response"
TPE = "ThreadPoolExecutor"
GATE_TIMEOUT = 60.0  # seconds
FULL = {"rounds": 4, "noop": 10_000, "sqlite": 1_500, "postgres": 600}
SMOKE = {"rounds": 1, "noop": 50, "sqlite": 20, "postgres": 20}


class Gate:
    """Calls that hold every worker until ``open()``: the backlog fills up behind them."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.go = threading.Event()

    def __call__(self) -> None:
        self.started.release()
        self.go.wait(GATE_TIMEOUT)

    def wait_until_held(self) -> None:
        for _ in range(WORKERS):
            if not self.started.acquire(timeout=GATE_TIMEOUT):
                raise RuntimeError("the workers did not start the gate calls")


def through_library(fn: Callable[[], object], calls: int) -> float:
    import after_response

    gate = Gate()
    for _ in range(WORKERS):
        after_response.defer(gate)  # outside a request: straight to the pool
    gate.wait_until_held()
    for _ in range(calls):
        after_response.defer(fn)
    t0 = time.perf_counter()
    gate.go.set()
    if not after_response.drain(GATE_TIMEOUT * 10):
        raise RuntimeError("after_response did not drain")
    return calls / (time.perf_counter() - t0)


def through_executor(
    executor: concurrent.futures.ThreadPoolExecutor, fn: Callable[[], object], calls: int
) -> float:
    gate = Gate()
    for _ in range(WORKERS):
        executor.submit(gate)
    gate.wait_until_held()
    futures = [executor.submit(fn) for _ in range(calls)]
    t0 = time.perf_counter()
    gate.go.set()
    concurrent.futures.wait(futures)
    elapsed = time.perf_counter() - t0
    for future in futures:
        future.result()  # raise what a call raised
    return calls / elapsed


def run(smoke: bool = False, celery: bool = True) -> common.Result:
    sizes = SMOKE if smoke else FULL
    postgres = common.postgres_reachable()
    skipped = None if postgres else f"PostgreSQL unreachable at {common.PG_HOST}:{common.PG_PORT}"
    with contextlib.ExitStack() as stack:
        sqlite_name = stack.enter_context(common.database("sqlite"))
        pg_name = stack.enter_context(common.database("postgres")) if postgres else ""
        if True:
            common.setup_django(
                "sqlite",
                sqlite_name,
                # The whole backlog is filled before the gate opens.
                {"WORKERS": WORKERS, "MAX_PENDING": max(sizes.values()) + WORKERS},
                pg_name=pg_name,
            )
            from django.db import connections

            from . import views

            # workload: (call, its alias with CONN_MAX_AGE=0, with 60, calls per side and round)
            workloads: dict[str, tuple[Callable[[str], object], str, str, int]] = {
                "no-op": (lambda alias: views.noop(), "default", "persistent", sizes["noop"]),
                "small ORM query, SQLite": (
                    views.small_query,
                    "default",
                    "persistent",
                    sizes["sqlite"],
                ),
            }
            if postgres:
                workloads["small ORM query, PostgreSQL"] = (
                    views.small_query,
                    "pg",
                    "pg_persistent",
                    sizes["postgres"],
                )
            executor = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS)
            per_round: dict[str, dict[str, list[float]]] = {workload: {} for workload in workloads}
            try:
                for index in range(sizes["rounds"]):
                    for workload, (fn, alias, persistent, calls) in workloads.items():
                        sides: dict[str, Callable[[], float]] = {
                            LIBRARY_0: functools.partial(
                                through_library, functools.partial(fn, alias), calls
                            ),
                            LIBRARY_60: functools.partial(
                                through_library, functools.partial(fn, persistent), calls
                            ),
                            TPE: functools.partial(
                                through_executor, executor, functools.partial(fn, alias), calls
                            ),
                        }
                        if workload == "no-op":
                            sides = {LIBRARY: sides[LIBRARY_0], TPE: sides[TPE]}
                        for name in common.rotated(list(sides), index):
                            with common.quiet_gc():
                                rate = sides[name]()
                            per_round[workload].setdefault(name, []).append(rate)
            finally:
                executor.shutdown()
                connections.close_all()
                import after_response

                after_response.shutdown(GATE_TIMEOUT)
    return report(per_round, sizes, skipped)


def report(
    per_round: dict[str, dict[str, list[float]]], sizes: dict[str, int], skipped: str | None
) -> common.Result:
    rows = []
    chart: dict[str, dict[str, float]] = {}
    for workload, sides in per_round.items():
        for name, rates in sides.items():
            stats = common.summary(rates)
            chart.setdefault(workload, {})[name] = stats["median"]
            versus = common.summary(
                [mine / theirs for mine, theirs in zip(rates, sides[TPE], strict=True)]
            )
            rows.append(
                [
                    workload,
                    f"**{name}**" if name.startswith(LIBRARY) else name,
                    common.fmt_spread(stats, digits=0),
                    "1" if name == TPE else common.fmt_spread(versus),
                ]
            )
    notes = [
        f"{sizes['rounds']} rounds; per round and side {sizes['noop']} no-op calls, "
        f"{sizes['sqlite']} SQLite and {sizes['postgres']} PostgreSQL queries. Values: median "
        "[quartiles] over rounds. Both pools: "
        f"{WORKERS} threads.",
        "CONN_MAX_AGE=0 is Django's default: after_response then connects and disconnects "
        "around every call, like Django around every request. The ThreadPoolExecutor keeps "
        "one connection per thread open for good, whatever CONN_MAX_AGE says.",
    ]
    if skipped:
        notes.append(f"PostgreSQL part skipped: {skipped}.")
    return {
        "name": "drain",
        "title": "3. Drain throughput: calls per second through the pool",
        "tables": [
            {
                "columns": ["workload", "pool", "calls/s", "rate / ThreadPoolExecutor's"],
                "rows": rows,
            }
        ],
        "targets": [],
        "notes": notes,
        "skipped": skipped,
        "chart": chart,
        "raw": per_round,
    }


def chart(result: common.Result, path: str) -> None:
    import matplotlib.pyplot as plt

    raw: dict[str, dict[str, list[float]]] = result["raw"]
    fig, axes = plt.subplots(1, len(raw), figsize=(4.6 * len(raw), 4))
    if len(raw) == 1:
        axes = [axes]
    for ax, (workload, sides) in zip(axes, raw.items(), strict=True):
        names = list(sides)
        rates = [statistics.median(sides[name]) for name in names]
        colors = ["C1" if name == TPE else "C0" for name in names]
        bars = ax.bar(range(len(names)), rates, color=colors)
        ax.bar_label(bars, labels=[f"{rate:,.0f}" for rate in rates], fontsize=8)
        labels = [name.replace(", ", "\n") for name in names]
        ax.set_xticks(range(len(names)), labels, fontsize=7)
        ax.set_title(workload, fontsize=10)
        ax.set_ylabel("calls per second (median)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    common.main(run)
