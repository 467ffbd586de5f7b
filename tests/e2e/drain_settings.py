"""Settings of the servers tests/test_drain.py starts: tests/e2e/settings.py, plus knobs.

``AFTER_RESPONSE_E2E_WORKERS`` and ``AFTER_RESPONSE_E2E_DRAIN_TIMEOUT`` (seconds) set the pool of
each server process and its drain budget at shutdown.
"""

from __future__ import annotations

import os

from tests.e2e.settings import *  # noqa: F403

ROOT_URLCONF = "tests.e2e.drain"
AFTER_RESPONSE_WORKERS = int(os.environ.get("AFTER_RESPONSE_E2E_WORKERS", "2"))
AFTER_RESPONSE_DRAIN_TIMEOUT = float(os.environ.get("AFTER_RESPONSE_E2E_DRAIN_TIMEOUT", "5.0"))
