"""6. Memory: RSS during a flood of deferred calls, bounded backlog vs an unbounded stdlib pool.

A flood of 100,000 calls: 10,000 requests back to back through ``WSGIHandler``, each deferring
10 calls that carry a 1 KiB argument (a mail body, say) and sleep 0.5 ms (a quick I/O), faster
than 4 workers can run them. after_response bounds its backlog at 1,000 calls
(``AFTER_RESPONSE_MAX_PENDING``): ``block`` holds the requests until there is room, ``drop``
drops the excess at once. A ``ThreadPoolExecutor(4)`` queues everything. Each side runs in a
fresh interpreter (RSS does not shrink back reliably), rounds alternate the sides; a thread
samples the process's RSS every 10 ms from just before the flood until its calls have run (the
executor's are cancelled once the flood is over: its peak is then behind it).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from . import common

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
MAX_PENDING = 1000
PAYLOAD = 1024  # bytes per call
CALL_SECONDS = 0.0005
CALLS_PER_REQUEST = 10
SAMPLE_EVERY = 0.01  # seconds
WAIT = 300.0  # seconds
SIDES = {
    "after_response, block": "block",
    "after_response, drop": "drop",
    "ThreadPoolExecutor": "tpe",
}
FULL = {"rounds": 2, "calls": 100_000}
SMOKE = {"rounds": 1, "calls": 200}


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def store(body: bytes) -> None:
    time.sleep(CALL_SECONDS)


def flood(side: str, calls: int) -> dict[str, Any]:
    """One side, in this (fresh) process."""
    with common.database("sqlite") as db_name:
        settings = {"WORKERS": WORKERS, "MAX_PENDING": MAX_PENDING}
        if side != "tpe":
            settings["WHEN_FULL"] = side
        os.environ["BENCH_LOG_LEVEL"] = "CRITICAL"  # "drop" logs every dropped batch
        common.setup_django("sqlite", db_name, settings)
        import after_response

        from . import views

        with_middleware, plain = common.handlers()
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS)
        if side == "tpe":
            views.SINKS["memory"] = lambda request: executor.submit(store, bytes(PAYLOAD))
            handler = plain
        else:
            views.SINKS["memory"] = lambda request: request.defer(store, bytes(PAYLOAD))
            handler = with_middleware
        path = f"/defer/memory/{CALLS_PER_REQUEST}/"
        for _ in range(10):  # warm up: imports, the pool's threads
            common.serve(handler, path)
        after_response.drain(WAIT)
        executor.submit(store, b"").result()
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                samples.append((round(time.monotonic() - started, 3), round(rss_mib(), 2)))
                stop.wait(SAMPLE_EVERY)

        before = rss_mib()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stats_before = after_response.stats()
        for _ in range(calls // CALLS_PER_REQUEST):
            common.serve(handler, path)
        flooded = time.monotonic() - started
        backlog_at_end = executor._work_queue.qsize() if side == "tpe" else None
        peak_sampled = max([rss for _, rss in samples] + [rss_mib()])
        if side == "tpe":
            executor.shutdown(cancel_futures=True)
        else:
            after_response.drain(WAIT)
            executor.shutdown()
        finished = time.monotonic() - started
        stop.set()
        sampler.join()
        stats = after_response.stats()
        return {
            "before_mib": before,
            "peak_mib": max(peak_sampled, *(rss for _, rss in samples)),
            "hwm_mib": peak_rss_mib(),
            "flood_seconds": flooded,
            "finished_seconds": finished,
            "done": stats.done - stats_before.done,
            "dropped": stats.dropped - stats_before.dropped,
            "tpe_queued_at_end_of_flood": backlog_at_end,
            "samples": samples,
        }


def run(smoke: bool = False, celery: bool = True) -> common.Result:
    sizes = SMOKE if smoke else FULL
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in SIDES}
    with tempfile.TemporaryDirectory(prefix="after_response_memory_") as directory:
        for index in range(sizes["rounds"]):
            for name in common.rotated(list(SIDES), index):
                out = Path(directory) / f"{SIDES[name]}-{index}.json"
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.memory",
                        "--side",
                        SIDES[name],
                        str(sizes["calls"]),
                        str(out),
                    ],
                    cwd=ROOT,
                    check=True,
                    timeout=WAIT,
                )
                measured[name].append(json.loads(out.read_text()))
    return report(measured, sizes)


def report(measured: dict[str, list[dict[str, Any]]], sizes: dict[str, int]) -> common.Result:
    rows = []
    for name, runs in measured.items():
        growth = common.summary([r["peak_mib"] - r["before_mib"] for r in runs])
        rows.append(
            [
                f"**{name}**" if name.startswith("after_response") else name,
                f"{common.summary([r['before_mib'] for r in runs])['median']:.1f}",
                common.fmt_spread(common.summary([r["peak_mib"] for r in runs]), digits=1),
                common.fmt_spread(growth, digits=1),
                common.fmt_spread(common.summary([r["flood_seconds"] for r in runs]), digits=1),
                " / ".join(str(r["done"]) for r in runs) if name != "ThreadPoolExecutor" else "-",
                " / ".join(str(r["dropped"]) for r in runs)
                if name != "ThreadPoolExecutor"
                else "-",
                " / ".join(str(r["tpe_queued_at_end_of_flood"]) for r in runs)
                if name == "ThreadPoolExecutor"
                else "<= 1000 (the bound)",
            ]
        )
    return {
        "name": "memory",
        "title": "6. Memory: RSS during a flood of deferred calls",
        "tables": [
            {
                "columns": [
                    "side",
                    "RSS before MiB",
                    "peak RSS MiB",
                    "growth MiB",
                    "flood s",
                    "calls run (per round)",
                    "dropped (per round)",
                    "queued at the end of the flood",
                ],
                "rows": rows,
            }
        ],
        "targets": [],
        "notes": [
            f"{sizes['calls']} calls per side and round ({sizes['calls'] // CALLS_PER_REQUEST} "
            f"requests x {CALLS_PER_REQUEST}), each with a {PAYLOAD} B argument and "
            f"{CALL_SECONDS * 1000} ms of sleep; {WORKERS} workers on every side; "
            f"after_response's bound: {MAX_PENDING} calls. {sizes['rounds']} rounds, each side in "
            "a fresh interpreter; values: median [quartiles] over rounds.",
            "'flood s': how long the 10,000 requests took: under 'block' the requests wait for "
            "room (the back-pressure a server would feel), under 'drop' they do not and the "
            "excess is dropped (and logged, here silenced).",
        ],
        "chart": {name: runs[0]["samples"] for name, runs in measured.items()},
        "raw": {
            name: [{k: v for k, v in r.items() if k != "samples"} for r in runs]
            for name, runs in measured.items()
        },
    }


def chart(result: common.Result, path: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for name, samples in result["chart"].items():
        if samples:
            base = samples[0][1]
            ax.plot([at for at, _ in samples], [rss - base for _, rss in samples], label=name)
    ax.set_xlabel("seconds since the flood began")
    ax.set_ylabel("RSS growth (MiB)")
    ax.set_title("RSS during a flood of deferred calls (first round)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--side"]:
        side, calls, out = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        Path(out).write_text(json.dumps(flood(side, calls)))
    else:
        common.main(run)
