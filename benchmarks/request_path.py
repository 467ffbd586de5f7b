"""1. What deferring one call costs: on the request path, and end to end.

**Request path**: the request thread's wall time to defer ``COUNT`` no-op calls and hand them
off (for after_response: ``request.defer()`` each, then the flush the response's close runs),
one request at a time, with the workers idle when each request starts, as they are below
capacity. Waiting for the workers to finish is outside the timed span. Against, in the same
process and rounds: ``SimpleQueue.put`` to one consumer thread (the floor),
``ThreadPoolExecutor.submit``, one ``threading.Thread(...).start()`` per call, and Celery's
``.delay()`` to the local Redis (no Celery worker: the messages are purged each round).

**End to end**: requests back to back through Django's ``WSGIHandler``, each deferring
``COUNT`` calls, the response closed as a server does, until every call has run; minus the
same requests deferring nothing, per call. The worker threads run alongside the requests, so
their share of the GIL is in. after_response's side includes its middleware; the others run
without it. Celery's figure is the web process's only: its worker is another process.

The no-op call is ``Semaphore.release`` of a per-side semaphore, which is how each round waits
for its calls without polling.
"""

from __future__ import annotations

import concurrent.futures
import gc
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from . import common

WORKERS = 4  # threads of after_response's pool and of the ThreadPoolExecutor
COUNTS = (1, 10)  # calls deferred per request
LIBRARY = "after_response"
FLOOR = "SimpleQueue.put"
TPE = "ThreadPoolExecutor.submit"
THREAD = "Thread.start"
CELERY = "Celery .delay()"
NONE = "none"
SIDE_KEYS = {LIBRARY: "library", FLOOR: "floor", TPE: "tpe", THREAD: "thread", CELERY: "celery"}
CELERY_BROKER = f"redis://{common.REDIS_HOST}:{common.REDIS_PORT}/15"
CELERY_QUEUE = "after_response_bench"
SETTLE_TIMEOUT = 60.0  # seconds a round waits for its calls before giving up
# Sides that cost 100 µs or more per call get this share of the calls: enough for their
# precision, and the full run stays within its time.
SLOW_SHARE = {THREAD: 0.25, CELERY: 0.25}

# Per round and side: calls on the request path, and calls of the end-to-end pair of batches.
FULL = {"rounds": 13, "calls": 1000, "e2e_rounds": 61, "e2e_calls": 200}
SMOKE = {"rounds": 2, "calls": 20, "e2e_rounds": 2, "e2e_calls": 20}


def requests_for(name: str, calls: int, count: int) -> int:
    return max(1, round(calls * SLOW_SHARE.get(name, 1.0) / count))


class Side:
    """One way of deferring: ``prepare`` (untimed), ``defer`` (timed), ``settle`` (untimed)."""

    def __init__(self) -> None:
        self.done = threading.Semaphore(0)

    def prepare(self) -> None:
        pass

    def defer(self, count: int) -> None:
        raise NotImplementedError

    def sink(self, request: Any) -> None:
        """What the benchmark view does to defer one call."""
        raise NotImplementedError

    def settle(self, calls: int) -> None:
        for _ in range(calls):
            if not self.done.acquire(timeout=SETTLE_TIMEOUT):
                raise RuntimeError(f"{type(self).__name__}: calls did not run")

    def close(self) -> None:
        pass


class Floor(Side):
    def __init__(self) -> None:
        super().__init__()
        self.queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[()], dict[str, Any]]] = (
            queue.SimpleQueue()
        )
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()

    def _consume(self) -> None:
        while True:
            fn, args, kwargs = self.queue.get()
            fn(*args, **kwargs)

    def defer(self, count: int) -> None:
        for _ in range(count):
            self.queue.put((self.done.release, (), {}))

    def sink(self, request: Any) -> None:
        self.queue.put((self.done.release, (), {}))


class Library(Side):
    def __init__(self, request: Any) -> None:
        from after_response.queues import ResponseQueue

        super().__init__()
        self.request = request
        self.queue_class = ResponseQueue

    def prepare(self) -> None:
        # What the middleware does for every request, deferring or not (see idle.py).
        queue = self.request.on_response_sent = self.queue_class(self.request)
        self.request.defer = queue.defer

    def defer(self, count: int) -> None:
        request = self.request
        for _ in range(count):
            request.defer(self.done.release)
        request.on_response_sent.flush()  # what the response's close() runs

    def sink(self, request: Any) -> None:
        request.defer(self.done.release)


class Executor(Side):
    def __init__(self) -> None:
        super().__init__()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS)

    def defer(self, count: int) -> None:
        for _ in range(count):
            self.executor.submit(self.done.release)

    def sink(self, request: Any) -> None:
        self.executor.submit(self.done.release)

    def close(self) -> None:
        self.executor.shutdown()


class Threads(Side):
    def defer(self, count: int) -> None:
        for _ in range(count):
            threading.Thread(target=self.done.release).start()

    def sink(self, request: Any) -> None:
        threading.Thread(target=self.done.release).start()


class CelerySide(Side):
    def __init__(self) -> None:
        super().__init__()
        from celery import Celery

        self.app = Celery("after_response_bench", broker=CELERY_BROKER)
        self.app.conf.task_default_queue = CELERY_QUEUE
        self.app.conf.task_ignore_result = True
        self.app.conf.broker_connection_retry_on_startup = False
        self.task = self.app.task(name="after_response_bench.noop")(_celery_noop)
        self.task.delay()  # connects and declares the queue: not what a request pays
        self.purge()

    def defer(self, count: int) -> None:
        for _ in range(count):
            self.task.delay()

    def sink(self, request: Any) -> None:
        self.task.delay()

    def settle(self, calls: int) -> None:
        pass  # the calls are in Redis; no worker runs them here

    def purge(self) -> None:
        self.app.control.purge()

    def close(self) -> None:
        self.purge()
        self.app.close()


def _celery_noop() -> None:
    pass


def celery_unavailable() -> str | None:
    """Why the Celery side cannot run here, or None."""
    try:
        import celery  # noqa: F401
    except ImportError:
        return "celery is not installed (pip install -r benchmarks/requirements.txt)"
    if not common.reachable(common.REDIS_HOST, common.REDIS_PORT):
        return f"Redis is unreachable at {common.REDIS_HOST}:{common.REDIS_PORT}"
    return None


def request_path(sides: dict[str, Side], count: int, calls: int, rounds: int) -> dict[str, Any]:
    """Per side, the per-call wall time of the request thread (µs), one value per round."""
    clock = time.perf_counter_ns
    overhead = common.timer_overhead_ns()
    per_round: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(rounds):
        for name in common.rotated(list(sides), index):
            side = sides[name]
            requests = requests_for(name, calls, count)
            total = 0.0
            with common.quiet_gc():
                for _ in range(requests):
                    side.prepare()
                    t0 = clock()
                    side.defer(count)
                    t1 = clock()
                    total += t1 - t0 - overhead
                    side.settle(count)
            per_round[name].append(total / (requests * count) / 1000)
        if CELERY in sides:
            sides[CELERY].purge()  # type: ignore[attr-defined]
    return per_round


def end_to_end(sides: dict[str, Side], count: int, calls: int, rounds: int) -> dict[str, Any]:
    """Per side, the per-call cost (µs) over requests deferring nothing, one value per round.

    Each round pairs, per side, a short batch of requests deferring nothing with the same
    number deferring through that side (in alternating order), so that both halves of each
    difference see the same machine.
    """
    from . import views

    with_middleware, plain = common.handlers()
    views.SINKS[NONE] = lambda request: None
    for name, side in sides.items():
        views.SINKS[SIDE_KEYS[name]] = side.sink

    def batch(name: str, requests: int) -> float:
        library = name == LIBRARY
        handler = with_middleware if library else plain
        path = f"/defer/{SIDE_KEYS.get(name, NONE)}/{count}/"
        t0 = time.perf_counter()
        for _ in range(requests):
            common.serve(handler, path)
        if name != NONE:
            sides[name].settle(requests * count)
        return time.perf_counter() - t0

    per_call: dict[str, list[float]] = {name: [] for name in sides}
    baseline: list[float] = []
    for index in range(rounds):
        gc.collect()
        for name in common.rotated(list(sides), index):
            requests = requests_for(name, calls, count)
            pair = (NONE, name) if index % 2 else (name, NONE)
            seconds = {which: batch(which, requests) for which in pair}
            extra = seconds[name] - seconds[NONE]
            per_call[name].append(extra / (requests * count) * 1e6)
            baseline.append(seconds[NONE] / requests * 1e6)
        if CELERY in sides:
            sides[CELERY].purge()  # type: ignore[attr-defined]
    return per_call | {"baseline_request_us": baseline}


def ratios(per_round: dict[str, list[float]], name: str) -> dict[str, float]:
    """How many times after_response's per-call cost ``name`` costs, per round."""
    return common.summary(
        [
            other / mine
            for other, mine in zip(per_round[name], per_round[LIBRARY], strict=True)
            if mine > 0
        ]
        or [float("nan")]
    )


def run(smoke: bool = False, celery: bool = True) -> common.Result:
    sizes = SMOKE if smoke else FULL
    skipped = celery_unavailable() if celery else "left out (--no-celery)"
    with common.database("sqlite") as db_name:
        common.setup_django(
            "sqlite",
            db_name,
            # The request path is measured with the workers idle; the bound is never reached.
            {"WORKERS": WORKERS},
        )
        from django.test import RequestFactory
        from django.urls import resolve

        import after_response

        request = RequestFactory().get("/defer/library/1/")
        request.resolver_match = resolve(request.path_info)
        sides: dict[str, Side] = {
            FLOOR: Floor(),
            LIBRARY: Library(request),
            TPE: Executor(),
            THREAD: Threads(),
        }
        if skipped is None:
            sides[CELERY] = CelerySide()
        try:
            measured: dict[str, Any] = {}
            for count in COUNTS:
                path = request_path(sides, count, sizes["calls"], sizes["rounds"])
                e2e = end_to_end(sides, count, sizes["e2e_calls"], sizes["e2e_rounds"])
                measured[str(count)] = {"request_path": path, "end_to_end": e2e}
            stats = after_response.stats()
        finally:
            for side in sides.values():
                side.close()
    return report(measured, sizes, skipped, stats.failed + stats.dropped)


def report(
    measured: dict[str, Any], sizes: dict[str, int], skipped: str | None, lost: int
) -> common.Result:
    rows = []
    targets = []
    ceilings: list[str] = []
    chart: dict[str, Any] = {}
    for count, data in measured.items():
        path, e2e = data["request_path"], data["end_to_end"]
        for name in path:
            path_stats = common.summary(path[name])
            e2e_stats = common.summary(e2e[name])
            chart.setdefault(count, {})[name] = {
                "request_path": path_stats["median"],
                "end_to_end": e2e_stats["median"],
            }
            mine = name == LIBRARY
            rows.append(
                [
                    f"**{name}**" if mine else name,
                    count,
                    common.fmt_spread(path_stats),
                    "1" if mine else common.fmt_spread(ratios(path, name)),
                    common.fmt_spread(e2e_stats),
                    "1" if mine else common.fmt_spread(ratios(e2e, name)),
                ]
            )
        baseline = common.summary(e2e["baseline_request_us"])
        rows.append(
            [
                "(request deferring nothing, no middleware)",
                count,
                "",
                "",
                f"{common.fmt_spread(baseline, digits=1)} per request",
                "",
            ]
        )
        path_ratio = ratios(path, TPE)["median"]
        e2e_ratio = ratios(e2e, TPE)["median"]
        if FLOOR in path and TPE in path:
            # How much cheaper than TPE.submit any hand-off that wakes a thread can be here.
            bound = common.summary(
                [t / f for t, f in zip(path[TPE], path[FLOOR], strict=True) if f > 0]
                or [float("nan")]  # a smoke run on a busy machine can time every floor as 0
            )["median"]
            e2e_bound = common.summary(
                [t / f for t, f in zip(e2e[TPE], e2e[FLOOR], strict=True) if f > 0]
                or [float("nan")]
            )["median"]
            ceilings.append(
                f"{count} call(s)/request: TPE.submit costs {common.fmt_ratio(bound)} the "
                f"floor on the request path and {common.fmt_ratio(e2e_bound)} end to end"
            )
        targets.append(
            {
                "claim": f"request path, {count} call(s)/request: TPE.submit / after_response",
                "target": ">= 5x",
                "measured": common.fmt_ratio(path_ratio),
                "met": path_ratio >= 5,
            }
        )
        targets.append(
            {
                "claim": f"end to end, {count} call(s)/request: TPE.submit / after_response",
                "target": ">= 2x",
                "measured": common.fmt_ratio(e2e_ratio),
                "met": e2e_ratio >= 2,
            }
        )
    notes = [
        f"Request path: {sizes['rounds']} rounds of {sizes['calls']} calls per side; end to "
        f"end: {sizes['e2e_rounds']} rounds of {sizes['e2e_calls']} calls per side (a quarter "
        "of that for Thread.start and Celery, which cost 100 µs or more a call); sides in a "
        "rotating order. Values: median [quartiles] over rounds, in µs per call. Ratios: the "
        "side's cost over after_response's, per round (> 1: after_response is cheaper).",
        f"Pools: after_response with {WORKERS} workers (defaults otherwise), "
        f"ThreadPoolExecutor(max_workers={WORKERS}); the floor has one consumer thread.",
        "End to end = (time for N requests deferring COUNT calls through WSGIHandler, closed "
        "like a server does, until every call has run - the same N requests deferring "
        "nothing, run just before or after) / calls. after_response's side includes its "
        "middleware on every request.",
    ]
    if ceilings:
        notes.append(
            "The floor bounds the claims: a hand-off that queues the calls and wakes a worker "
            "thread cannot cost less than one SimpleQueue.put to a waiting consumer. In this "
            "run, " + "; ".join(ceilings) + ". A ratio against TPE.submit above that is out of "
            "reach for any design that hands off to a thread of the same process."
        )
    if skipped:
        notes.append(f"Celery side skipped: {skipped}.")
    else:
        notes.append(
            "Celery: `.delay()` of a no-op task to Redis at 127.0.0.1:6379 (no result backend); "
            "its end-to-end figure is the web process's share only (its worker is another "
            "process and was not running)."
        )
    if lost:
        notes.append(f"WARNING: {lost} after_response call(s) failed or were dropped.")
    return {
        "name": "request_path",
        "title": "1. Cost per deferred call: request path and end to end",
        "tables": [
            {
                "columns": [
                    "side",
                    "calls/request",
                    "request path µs/call",
                    "cost / after_response's",
                    "end to end µs/call",
                    "cost / after_response's",
                ],
                "rows": rows,
            }
        ],
        "targets": targets,
        "notes": notes,
        "skipped": skipped,
        "chart": chart,
        "raw": measured,
    }


def chart(result: common.Result, path: str) -> None:
    import matplotlib.pyplot as plt

    data = result["chart"]
    counts = list(data)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in (
        (axes[0], "request_path", "Request path (request thread)"),
        (axes[1], "end_to_end", "End to end through WSGIHandler (incl. workers)"),
    ):
        names = list(data[counts[0]])
        height = 0.8 / len(counts)
        for offset, count in enumerate(counts):
            values = [max(data[count][name][key], 0.01) for name in names]
            positions = [i + offset * height for i in range(len(names))]
            bars = ax.barh(positions, values, height=height, label=f"{count} call(s)/request")
            ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=2)
        ax.set_yticks([i + height * (len(counts) - 1) / 2 for i in range(len(names))], names)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("µs per call (median over rounds, log scale)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    common.main(run)
