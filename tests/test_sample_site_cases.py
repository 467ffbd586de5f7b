"""The demo's use cases through Django's test client: sample_site/demo/tests, run with the demo's
own settings in a subprocess.

This suite runs under tests.settings, and one process holds one settings module: the demo's
tests live with the demo (sample_site/pytest.ini names sample_site.settings, so
``cd sample_site && python -m pytest`` runs them too) and this test runs them as they are.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .sample_site_server import SITE

RUN_TIMEOUT = 100.0  # seconds; below the suite's per-test timeout of 120


def test_demo_use_cases() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sample_site.settings"}
    for name in ("SAMPLE_SITE_DB", "SAMPLE_SITE_DATA", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=SITE,  # its pytest.ini: sample_site.settings, filterwarnings = error
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert " passed" in report and " failed" not in report, report
