"""2. Idle overhead: a minimal request through ``WSGIHandler``, with and without the middleware.

Nothing is deferred. The view returns a two-byte ``HttpResponse``; no other middleware, so this
is the largest share the middleware can take of a request. Each round times a batch of requests
on each side, in alternating order; the claim is the median over rounds of the per-round ratio.
The middleware runs no signal receiver for a WSGI request, so the two sides differ by it alone.
"""

from __future__ import annotations

import statistics
import time

from . import common

WITH, WITHOUT = "with the middleware", "without"
REFERENCE = "a pass-through middleware instead (reference)"
FULL = {"rounds": 2001, "requests": 20}
SMOKE = {"rounds": 3, "requests": 20}
TARGET = 0.03  # at most 3% slower


def run(smoke: bool = False, celery: bool = True) -> common.Result:
    sizes = SMOKE if smoke else FULL
    with common.database("sqlite") as db_name:
        common.setup_django("sqlite", db_name)
        with_middleware, plain = common.handlers()
        _, reference = common.handlers(["benchmarks.middleware.PassThrough"])
        handlers = {WITH: with_middleware, WITHOUT: plain, REFERENCE: reference}
        for handler in handlers.values():  # warm up
            for _ in range(100):
                common.serve(handler, "/hello/")
        seconds: dict[str, list[float]] = {name: [] for name in handlers}
        for index in range(sizes["rounds"]):
            for name in common.rotated(list(handlers), index):
                handler = handlers[name]
                t0 = time.perf_counter()
                for _ in range(sizes["requests"]):
                    common.serve(handler, "/hello/")
                seconds[name].append(time.perf_counter() - t0)
    return report(seconds, sizes)


def report(seconds: dict[str, list[float]], sizes: dict[str, int]) -> common.Result:
    requests = sizes["requests"]
    per_request = {
        name: common.summary([s / requests * 1e6 for s in values])
        for name, values in seconds.items()
    }

    def versus_without(name: str) -> tuple[float, str]:
        ratio = common.summary(
            [a / b for a, b in zip(seconds[name], seconds[WITHOUT], strict=True)]
        )
        added = common.summary(
            [(a - b) / requests * 1e6 for a, b in zip(seconds[name], seconds[WITHOUT], strict=True)]
        )
        overhead = ratio["median"] - 1
        return overhead, (
            f"{overhead * 100:+.1f}% [{(ratio['q1'] - 1) * 100:+.1f}% - "
            f"{(ratio['q3'] - 1) * 100:+.1f}%]; {common.fmt_spread(added, digits=2)} µs"
        )

    overhead, text = versus_without(WITH)
    rows = [
        [WITHOUT, common.fmt_spread(per_request[WITHOUT], digits=1), ""],
        [f"**{WITH}**", common.fmt_spread(per_request[WITH], digits=1), text],
        [
            REFERENCE,
            common.fmt_spread(per_request[REFERENCE], digits=1),
            versus_without(REFERENCE)[1],
        ],
    ]
    total = sizes["rounds"] * requests * len(seconds)
    return {
        "name": "idle",
        "title": "2. Idle overhead: a request that defers nothing",
        "tables": [
            {
                "columns": [
                    "minimal request",
                    "µs/request",
                    "slower than without (per-round ratio); µs added",
                ],
                "rows": rows,
            }
        ],
        "targets": [
            {
                "claim": "minimal request, middleware on, nothing deferred",
                "target": f"<= {TARGET:.0%} slower",
                "measured": f"{overhead * 100:+.1f}%",
                "met": overhead <= TARGET,
            }
        ],
        "notes": [
            f"{total} requests: {sizes['rounds']} rounds of {requests} per side, rotating "
            "which side goes first. Values: median [quartiles] over rounds.",
            "The reference row is the cheapest possible middleware (`return "
            "get_response(request)`): the part of the overhead that any middleware costs in "
            "Django's handler.",
            "The request: GET /hello/ through WSGIHandler, body read and response closed like a "
            "server does, no other middleware; a real project's requests are longer, so the same "
            "added µs are a smaller share of them.",
        ],
        "chart": {
            name: [a / b for a, b in zip(seconds[name], seconds[WITHOUT], strict=True)]
            for name in (WITH, REFERENCE)
        },
        "raw": seconds,
    }


def chart(result: common.Result, path: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    bins = list(range(-30, 41))  # percent, one wide
    for color, (name, ratios) in zip(("C0", "C2"), result["chart"].items(), strict=False):
        percent = [(r - 1) * 100 for r in ratios]
        ax.hist(percent, bins=bins, color=color, alpha=0.45, label=f"{name}, per round")
        median = statistics.median(percent)
        ax.axvline(median, color=color, label=f"median {median:+.1f}%")
    ax.axvline(TARGET * 100, color="C3", linestyle="--", label=f"target {TARGET:.0%}")
    ax.set_xlabel("slower than without middleware (%)")
    ax.set_ylabel("rounds")
    ax.set_title("Idle overhead of the middleware, minimal request")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    common.main(run)
