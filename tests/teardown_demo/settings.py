"""Settings of the teardown demonstration: its own PostgreSQL test database, named by the
parent test in ``AFTER_RESPONSE_DEMO_DB`` so that a failed teardown never touches another run's."""

from __future__ import annotations

import os

from tests.settings import PG_HOST, PG_PORT, PG_USER

SECRET_KEY = "teardown-demo"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["tests"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": PG_USER,
        "HOST": PG_HOST,
        "PORT": PG_PORT,
        "CONN_MAX_AGE": 0,
        "TEST": {"NAME": os.environ["AFTER_RESPONSE_DEMO_DB"]},
    }
}
