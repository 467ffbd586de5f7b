"""Instructions per deferred call, counted by valgrind's callgrind: immune to a busy machine.

    python -m benchmarks.call_instructions          # needs valgrind (apt-get install valgrind)

Requests through ``WSGIHandler`` that defer 1 or 10 no-op calls, run by the worker pool (its
threads are counted too: callgrind counts every thread), against requests that defer nothing.
Each side runs twice, with 0 and with N requests after the same warm-up; the difference divided
by N is the cost of one request, start-up excluded. No Sentry or OpenTelemetry is imported: this
is the cost every user pays.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

REQUESTS = 1000
WARM_UP = 100
# BENCH_IMMEDIATE=1: the calls run inline as the response closes (AFTER_RESPONSE_IMMEDIATE), in
# one thread: no thread switches, whose count varies from run to run, only the library's own work.
IMMEDIATE = os.environ.get("BENCH_IMMEDIATE") == "1"
SIDES = {"none": "/hello/", "one": "/defer/after_response/1/", "ten": "/defer/after_response/10/"}


def serve(side: str, requests: int) -> None:
    from . import common

    with common.database("sqlite") as db_name:
        common.setup_django("sqlite", db_name)
        import after_response

        from . import views

        views.SINKS["after_response"] = lambda request: request.defer(views.noop)
        if IMMEDIATE:
            from django.test.utils import override_settings

            override_settings(AFTER_RESPONSE_IMMEDIATE=True).enable()
        handler, _ = common.handlers()
        for _ in range(WARM_UP + requests):
            common.serve(handler, SIDES[side])
            assert after_response.drain(60)  # the calls' instructions are this request's


def count(side: str, requests: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={directory}/callgrind.out",
                sys.executable,
                "-m",
                "benchmarks.call_instructions",
                "--serve",
                side,
                str(requests),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    match = re.search(r"Collected : (\d+)", result.stderr)
    assert match, result.stderr
    return int(match.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    per_request = {side: (count(side, REQUESTS) - count(side, 0)) / REQUESTS for side in SIDES}
    one = per_request["one"] - per_request["none"]
    ten = (per_request["ten"] - per_request["none"]) / 10
    print(
        f"call_instructions: {one:,.0f} instructions for a request's only call, {ten:,.0f} per "
        f"call of ten (defer, hand-off, {'inline run' if IMMEDIATE else 'worker, drain'}), "
        f"{REQUESTS} requests, callgrind"
    )


if __name__ == "__main__":
    main()
