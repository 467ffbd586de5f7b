"""Each worker process of the counters test writes its ``after_response.stats()`` into the
settings' ``TALLY_DIR``, as ``stats-<pid>.json``, when it exits, after its calls were drained:
tests/test_faults.py adds them up across processes. Nothing of this is in the library (no debug
endpoint): it is what any project can do with the public ``stats()``.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
from pathlib import Path

from django.apps import AppConfig
from django.conf import settings

import after_response


def write_stats_at_exit(directory: Path) -> None:
    # The library drains in its own exit hooks; shutdown() is idempotent, and calling it here
    # makes sure the counters are final whichever hook runs first.
    after_response.shutdown()
    stats = after_response.stats()
    target = directory / f"stats-{os.getpid()}.json"
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps(dataclasses.asdict(stats)))
    partial.replace(target)  # the test never reads half a file


class StatsAtExit(AppConfig):
    name = "tests.e2e"
    label = "e2e_tally"

    def ready(self) -> None:
        # In each worker process: gunicorn (without --preload) sets Django up after the fork.
        atexit.register(write_stats_at_exit, Path(settings.TALLY_DIR))
