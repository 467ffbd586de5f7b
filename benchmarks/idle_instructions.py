"""Instructions per idle request, counted by valgrind's callgrind: immune to a busy machine.

    python -m benchmarks.idle_instructions          # needs valgrind (apt-get install valgrind)

A minimal request through ``WSGIHandler`` (nothing deferred), with and without the middleware.
Each side runs twice under callgrind, with 0 and with N requests after the same warm-up; the
difference divided by N is the cost of one request, start-up excluded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

REQUESTS = 2000
WARM_UP = 200
SIDES = ("with", "without")


def serve(side: str, requests: int) -> None:
    from . import common

    with common.database("sqlite") as db_name:
        common.setup_django("sqlite", db_name)
        with_middleware, plain = common.handlers()
        handler = with_middleware if side == "with" else plain
        for _ in range(WARM_UP + requests):
            common.serve(handler, "/hello/")


def count(side: str, requests: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={directory}/callgrind.out",
                sys.executable,
                "-m",
                "benchmarks.idle_instructions",
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
    overhead = per_request["with"] - per_request["without"]
    print(
        f"idle_instructions: {per_request['with']:,.0f} instructions per request with the "
        f"middleware, {per_request['without']:,.0f} without: +{overhead:,.0f} "
        f"({overhead / per_request['without']:+.1%}), {REQUESTS} requests, callgrind"
    )


if __name__ == "__main__":
    main()
