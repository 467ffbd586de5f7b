"""4. Served latency under gunicorn gthread, at a fixed load from a second process.

One gunicorn (1 worker process x 4 threads, after_response's default of 4 workers, so the pool
runs 40 calls of 100 ms per second) serves three views: one that defers 100 ms of
I/O (``time.sleep(0.1)``), the same deferring nothing, and the same doing the work inline.
``wrk`` (``pace.lua``: a fixed mean rate with Poisson arrivals, a bounded count;
``loadgen.py`` where wrk is missing) requests each at half the pool's capacity, in rotating
order, several rounds; the claim is the p99 of the deferring view against the one deferring
nothing, per round.

Then above capacity (twice the pool's rate), on a server per policy with
``AFTER_RESPONSE_MAX_PENDING = 50`` so that the backlog fills within the run: ``block`` holds
the server's threads in the hand-off (back-pressure: the served rate drops to what the pool
runs, latency grows, nothing is dropped); ``drop`` keeps serving and drops the excess.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import common

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
# One worker process: gunicorn does not spread keep-alive connections evenly over several (all
# of wrk's may land on one), which would leave "the pool's capacity" ill-defined.
PROCESSES, THREADS = 1, 4  # gunicorn worker processes, threads per process
POOL_WORKERS = 4  # after_response's default, per process
CAPACITY = PROCESSES * POOL_WORKERS / 0.1  # deferred 100 ms calls per second
BELOW, ABOVE = CAPACITY / 2, CAPACITY * 2  # requests per second
OVERLOAD_MAX_PENDING = 50
CONNECTIONS_BELOW, CONNECTIONS_ABOVE = 8, 32
NONE, DEFERRED, INLINE = "deferring nothing", "deferring the I/O", "doing the I/O inline"
VARIANTS = {NONE: "none", DEFERRED: "deferred", INLINE: "inline"}
START_TIMEOUT = 30.0  # seconds
STOP_TIMEOUT = 15.0  # seconds
IDLE_TIMEOUT = 30.0  # seconds for the deferred calls of a run to finish
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
# seconds: whole ones (wrk's unit), but io (what the views sleep); the smoke run's shorter I/O
# only saves the time its backlog would take to run.
FULL = {"rounds": 7, "seconds": 10, "warmup": 2, "overload_seconds": 8, "io": 0.1}
SMOKE = {"rounds": 1, "seconds": 1, "warmup": 0, "overload_seconds": 1, "io": 0.02}


class Server:
    """A gunicorn gthread server of benchmarks.settings on 127.0.0.1, stopped by PID."""

    def __init__(self, env: dict[str, str], log_dir: str, name: str) -> None:
        self.log_path = Path(log_dir) / f"gunicorn-{name}.log"
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            str(PROCESSES),
            "--worker-class",
            "gthread",
            "--threads",
            str(THREADS),
            "--graceful-timeout",
            "10",
            "--no-control-socket",
            "django.core.wsgi:get_wsgi_application()",
        ]
        env = {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.port = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log()[-3000:]}")
            found = LISTENING.search(self.log())
            if found and self.get("/served/none/") is not None:
                self.port = int(found.group(1))
                return
            time.sleep(0.05)
        raise RuntimeError(f"gunicorn did not start:\n{self.log()[-3000:]}")

    def get(self, path: str) -> bytes | None:
        found = LISTENING.search(self.log())
        if not found:
            return None
        conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            return body if response.status == 200 else None
        except OSError:
            return None
        finally:
            conn.close()

    def stats(self) -> dict[int, dict[str, Any]]:
        """after_response.stats() of each worker process (a new connection lands on either)."""
        per_process: dict[int, dict[str, Any]] = {}
        for _ in range(50):
            body = self.get("/stats/")
            if body is not None:
                stats = json.loads(body)
                per_process[stats["pid"]] = stats
            if len(per_process) == PROCESSES:
                break
        return per_process

    def wait_idle(self) -> dict[int, dict[str, Any]]:
        """Wait until no deferred call is queued or running in any process; their stats."""
        deadline = time.monotonic() + IDLE_TIMEOUT
        while True:
            stats = self.stats()
            busy = [s for s in stats.values() if s["backlog"] or s["running"] or s["waiting"]]
            if len(stats) == PROCESSES and not busy:
                return stats
            if time.monotonic() > deadline:
                raise RuntimeError(f"deferred calls still running: {stats}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def server(env: dict[str, str], log_dir: str, name: str) -> Iterator[Server]:
    running = Server(env, log_dir, name)
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.stop()


def load(port: int, path: str, rate: float, seconds: int, connections: int) -> dict[str, Any]:
    """Requests at ``rate`` for ``seconds`` (whole seconds: wrk's unit), at most 5% more."""
    count = max(1, round(rate * seconds * 1.05))
    url = f"http://127.0.0.1:{port}{path}"
    if shutil.which("wrk"):
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
        command += ["-s", str(HERE / "pace.lua"), url, "--", str(rate), str(count)]
    else:
        command = [sys.executable, "-m", "benchmarks.loadgen", url, str(rate), str(count)]
        command += [str(connections), str(seconds)]
    finished = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 30, check=True
    )
    for line in finished.stdout.splitlines():
        if line.startswith("BENCH "):
            result: dict[str, Any] = json.loads(line[len("BENCH ") :])
            result["offered"] = rate
            return result
    raise RuntimeError(f"no result from {command[0]}:\n{finished.stdout}\n{finished.stderr}")


def quantile(quantiles_us: list[int], q: float) -> float:
    """The q-quantile (0 < q < 1) in ms, from 999 per-mille quantiles."""
    return quantiles_us[min(998, max(0, round(q * 1000) - 1))] / 1000


def run(smoke: bool = False, celery: bool = True) -> common.Result:
    sizes = SMOKE if smoke else FULL
    tool = "wrk" if shutil.which("wrk") else "loadgen.py (wrk not installed)"
    with tempfile.TemporaryDirectory(prefix="after_response_served_") as log_dir:
        db_name = str(Path(log_dir) / "unused.sqlite3")  # the views touch no database
        env = common.server_env("sqlite", db_name, {"DRAIN_TIMEOUT": 5.0})
        env["BENCH_IO_SECONDS"] = str(sizes["io"])
        below: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
        with server(env, log_dir, "below") as running:
            for variant in VARIANTS.values():
                if sizes["warmup"]:
                    load(running.port, f"/served/{variant}/", BELOW, sizes["warmup"], 8)
                else:
                    running.get(f"/served/{variant}/")
            running.wait_idle()
            for index in range(sizes["rounds"]):
                for name in common.rotated(list(VARIANTS), index):
                    path = f"/served/{VARIANTS[name]}/"
                    result = load(running.port, path, BELOW, sizes["seconds"], CONNECTIONS_BELOW)
                    below[name].append(result)
                    below_stats = running.wait_idle()
        overload: dict[str, dict[str, Any]] = {}
        for policy in ("block", "drop"):
            settings = {
                "DRAIN_TIMEOUT": 5.0,
                "MAX_PENDING": OVERLOAD_MAX_PENDING,
                "WHEN_FULL": policy,
            }
            env = common.server_env("sqlite", db_name, settings)
            env["BENCH_IO_SECONDS"] = str(sizes["io"])
            env["BENCH_LOG_LEVEL"] = "CRITICAL"  # "drop" logs every dropped batch
            with server(env, log_dir, policy) as running:
                running.get("/served/deferred/")  # starts the pool of one process
                result = load(
                    running.port,
                    "/served/deferred/",
                    ABOVE,
                    sizes["overload_seconds"],
                    CONNECTIONS_ABOVE,
                )
                result["stats"] = running.wait_idle()
                overload[policy] = result
    return report(below, below_stats, overload, sizes, tool)


def report(
    below: dict[str, list[dict[str, Any]]],
    below_stats: dict[int, dict[str, Any]],
    overload: dict[str, dict[str, Any]],
    sizes: dict[str, Any],
    tool: str,
) -> common.Result:
    rows = []
    pooled: dict[str, list[int]] = {}
    for name, runs in below.items():
        p50 = common.summary([quantile(r["quantiles_us"], 0.5) for r in runs])
        p99 = common.summary([quantile(r["quantiles_us"], 0.99) for r in runs])
        rate = common.summary([r["requests"] / r["seconds"] for r in runs])
        versus = common.summary(
            [
                quantile(mine["quantiles_us"], 0.99) / quantile(base["quantiles_us"], 0.99)
                for mine, base in zip(runs, below[NONE], strict=True)
            ]
        )
        errors = sum(r["socket_errors"] + r["timeouts"] + r["status_errors"] for r in runs)
        pooled[name] = sorted(q for r in runs for q in r["quantiles_us"])
        rows.append(
            [
                f"**{name}**" if name == DEFERRED else name,
                f"{BELOW:.0f}",
                common.fmt_spread(rate, digits=1),
                common.fmt_spread(p50),
                common.fmt_spread(p99),
                "1" if name == NONE else common.fmt_spread(versus),
                sum(r["requests"] for r in runs),
                errors,
            ]
        )
    over_rows = []
    for policy, result in overload.items():
        stats = result["stats"]
        over_rows.append(
            [
                f"deferring the I/O, WHEN_FULL={policy!r}",
                f"{ABOVE:.0f}",
                f"{result['requests'] / result['seconds']:.1f}",
                f"{quantile(result['quantiles_us'], 0.5):.2f}",
                f"{quantile(result['quantiles_us'], 0.99):.2f}",
                result["requests"],
                sum(s["accepted"] for s in stats.values()),
                sum(s["done"] for s in stats.values()),
                sum(s["dropped"] for s in stats.values()),
                result["socket_errors"] + result["timeouts"],
            ]
        )
    ratio = statistics.median(
        quantile(mine["quantiles_us"], 0.99) / quantile(base["quantiles_us"], 0.99)
        for mine, base in zip(below[DEFERRED], below[NONE], strict=True)
    )
    lost = sum(s["failed"] + s["dropped"] for s in below_stats.values())
    notes = [
        f"The I/O: time.sleep({sizes['io']}). "
        f"gunicorn gthread, {PROCESSES} worker process x {THREADS} threads, on 127.0.0.1; "
        f"after_response {POOL_WORKERS} workers: the pool runs "
        f"{CAPACITY:.0f} deferred 100 ms calls per second. Load from a second process: {tool}, "
        f"{CONNECTIONS_BELOW} keep-alive connections, a fixed mean rate with Poisson "
        "arrivals (evenly spaced requests would make every deferred call end as the request "
        "two slots later is served), no catching up on missed slots, bounded by count and time.",
        f"Below capacity: {sizes['rounds']} rounds of {sizes['seconds']} s per view, rotating "
        "order; values in ms: median [quartiles] over rounds of each round's p50 and p99; "
        "'p99 vs nothing' is the per-round ratio.",
        f"Above capacity: one {sizes['overload_seconds']} s run per policy at "
        f"{ABOVE:.0f} requests/s over {CONNECTIONS_ABOVE} connections, "
        f"AFTER_RESPONSE_MAX_PENDING={OVERLOAD_MAX_PENDING} so that the backlog fills within "
        "the run. Calls: after_response.stats() of the server's process after the run.",
    ]
    if lost:
        notes.append(f"WARNING: {lost} deferred call(s) failed or were dropped below capacity.")
    pooled_chart = {
        name: [values[min(len(values) - 1, round(len(values) * i / 200))] for i in range(200)]
        for name, values in pooled.items()
    }
    return {
        "name": "served",
        "title": "4. Served latency: gunicorn gthread under a fixed load",
        "tables": [
            {
                "columns": [
                    "view",
                    "offered req/s",
                    "served req/s",
                    "p50 ms",
                    "p99 ms",
                    "p99 vs nothing",
                    "requests",
                    "errors",
                ],
                "rows": rows,
            },
            {
                "columns": [
                    "above capacity",
                    "offered req/s",
                    "served req/s",
                    "p50 ms",
                    "p99 ms",
                    "requests",
                    "calls accepted",
                    "done",
                    "dropped",
                    "errors",
                ],
                "rows": over_rows,
            },
        ],
        "targets": [
            {
                "claim": "p99, view deferring 100 ms of I/O vs deferring nothing (below capacity)",
                "target": "within 10%",
                "measured": f"{(ratio - 1) * 100:+.1f}%",
                "met": ratio <= 1.10,
            }
        ],
        "notes": notes,
        "chart": {
            "pooled_us": pooled_chart,
            "overload": {
                policy: {
                    "p50": quantile(r["quantiles_us"], 0.5),
                    "p99": quantile(r["quantiles_us"], 0.99),
                    "served": r["requests"] / r["seconds"],
                }
                for policy, r in overload.items()
            },
        },
        "raw": {
            "below": {
                name: [{k: v for k, v in r.items() if k != "quantiles_us"} for r in runs]
                for name, runs in below.items()
            },
            "overload": {
                policy: {k: v for k, v in r.items() if k != "quantiles_us"}
                for policy, r in overload.items()
            },
        },
    }


def chart(result: common.Result, path: str) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, values in result["chart"]["pooled_us"].items():
        fractions = [(i + 0.5) / len(values) for i in range(len(values))]
        left.plot([v / 1000 for v in values], fractions, label=name)
    left.set_xscale("log")
    left.set_xlabel("latency (ms, log scale)")
    left.set_ylabel("fraction of requests")
    left.set_title(f"Below capacity ({BELOW:.0f} req/s), all rounds")
    left.legend(fontsize=8)
    overload = result["chart"]["overload"]
    policies = list(overload)
    width = 0.35
    for offset, key in enumerate(("p50", "p99")):
        positions = [i + offset * width for i in range(len(policies))]
        bars = right.bar(positions, [overload[p][key] for p in policies], width, label=key)
        right.bar_label(bars, labels=[f"{overload[p][key]:.1f}" for p in policies], fontsize=8)
    right.set_xticks(
        [i + width / 2 for i in range(len(policies))],
        [f"{p}\nserved {overload[p]['served']:.0f} req/s" for p in policies],
    )
    right.set_yscale("log")
    right.set_ylabel("latency (ms, log scale)")
    right.set_title(f"Above capacity ({ABOVE:.0f} req/s offered, pool runs {CAPACITY:.0f}/s)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    common.main(run)
