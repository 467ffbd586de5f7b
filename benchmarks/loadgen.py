"""The stand-in for ``wrk -s pace.lua`` where wrk is not installed: same pacing, same output.

``python -m benchmarks.loadgen URL RATE COUNT CONNECTIONS SECONDS``: sends RATE requests per
second on average (Poisson arrivals, as in pace.lua) over CONNECTIONS keep-alive connections
(a request waits for a free connection), stops sending after COUNT requests or SECONDS,
whichever comes first, and prints ``BENCH {json}`` with the latency quantiles in µs.
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

TIMEOUT = 10.0  # seconds per request


def main() -> None:
    url, rate, count, connections, seconds = sys.argv[1:6]
    parsed = urllib.parse.urlsplit(url)
    interval = 1 / float(rate)
    deadline = time.monotonic() + float(seconds)
    lock = threading.Lock()
    state = {"due": time.monotonic(), "left": int(count)}
    gaps = random.Random(20261203)
    latencies: list[float] = []
    errors = [0]

    def next_slot() -> float | None:
        with lock:
            if state["left"] <= 0:
                return None
            state["left"] -= 1
            now = time.monotonic()
            slot = max(state["due"], now)
            state["due"] = slot + gaps.expovariate(1 / interval)
            return slot

    def client() -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=TIMEOUT)
        try:
            while (slot := next_slot()) is not None:
                pause = slot - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if time.monotonic() > deadline:
                    return
                started = time.monotonic()
                try:
                    conn.request("GET", parsed.path)
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                except OSError:
                    conn.close()
                    ok = False
                with lock:
                    if ok:
                        latencies.append(time.monotonic() - started)
                    else:
                        errors[0] += 1
        finally:
            conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(int(connections))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]
    quantiles = [
        round(ordered[min(len(ordered) - 1, int(len(ordered) * i / 1000))] * 1e6)
        for i in range(1, 1000)
    ]
    result = {
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "socket_errors": errors[0],
        "timeouts": 0,
        "status_errors": 0,
        "max_us": round(ordered[-1] * 1e6),
        "quantiles_us": quantiles,
    }
    print("BENCH " + json.dumps(result))


if __name__ == "__main__":
    main()
