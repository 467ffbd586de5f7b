"""Settings of the server that tests/test_faults.py floods with small requests.

tests/e2e/settings.py, plus a backlog of two calls per process that drops when full, and
``AFTER_RESPONSE_E2E_TALLY_DIR``: where the calls and each worker process's stats are written.
"""

from __future__ import annotations

import os

from tests.e2e.settings import *  # noqa: F403
from tests.e2e.settings import INSTALLED_APPS

ROOT_URLCONF = "tests.e2e.tally"
INSTALLED_APPS = [*INSTALLED_APPS, "tests.e2e.tally_apps.StatsAtExit"]
TALLY_DIR = os.environ["AFTER_RESPONSE_E2E_TALLY_DIR"]

AFTER_RESPONSE_MAX_PENDING = 2  # calls per process: many requests, so some are dropped
AFTER_RESPONSE_WHEN_FULL = "drop"
