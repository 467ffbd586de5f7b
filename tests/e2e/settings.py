"""Settings of the server processes started by tests/test_servers.py.

The test process passes the database pytest-django created for it, as JSON, in
``AFTER_RESPONSE_E2E_DATABASE``: the servers write where the test reads.
"""

from __future__ import annotations

import json
import os

from django.core.exceptions import ImproperlyConfigured

try:
    _DATABASE = json.loads(os.environ["AFTER_RESPONSE_E2E_DATABASE"])
except KeyError:
    raise ImproperlyConfigured(
        "tests.e2e.settings is for the servers that tests/test_servers.py starts: "
        "AFTER_RESPONSE_E2E_DATABASE (the test database as JSON) is not set."
    ) from None

SECRET_KEY = "e2e"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.e2e.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = ["after_response", "tests"]
MIDDLEWARE = ["after_response.middleware.AfterResponseMiddleware"]
DATABASES = {"default": _DATABASE}

AFTER_RESPONSE_WORKERS = 2  # threads per server process
AFTER_RESPONSE_DRAIN_TIMEOUT = 5.0  # seconds; below the --graceful-timeout the tests pass
AFTER_RESPONSE_IMMEDIATE = os.environ.get("AFTER_RESPONSE_E2E_IMMEDIATE") == "1"

# Everything the library logs (a failed deferred call, a dropped one) goes to the server's
# log, which the tests print when they fail and check for tracebacks.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "[%(process)d] %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "after_response": {"handlers": ["stderr"], "level": "INFO"},
        "django": {"handlers": ["stderr"], "level": "WARNING"},
    },
}
