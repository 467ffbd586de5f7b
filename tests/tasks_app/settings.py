"""Settings of the gunicorn and db_worker processes that tests/test_tasks.py starts.

Only ``TASKS`` differs between the two backends; the task code and the views are the same.
The test passes the database it created, as JSON, in ``AFTER_RESPONSE_TASKS_DATABASE``, and the
backend (``after_response`` or ``database``) in ``AFTER_RESPONSE_TASKS_BACKEND``.
"""

from __future__ import annotations

import json
import os
from importlib.util import find_spec

from django.core.exceptions import ImproperlyConfigured

try:
    _DATABASE = json.loads(os.environ["AFTER_RESPONSE_TASKS_DATABASE"])
    _BACKEND = os.environ["AFTER_RESPONSE_TASKS_BACKEND"]
except KeyError as missing:
    raise ImproperlyConfigured(
        f"tests.tasks_app.settings is for the processes tests/test_tasks.py starts: {missing} "
        "is not set."
    ) from None

SECRET_KEY = "tasks-e2e"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.tasks_app.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    # Django 5.2: the backport's app (its checks and log receivers), as its README says.
    *([] if find_spec("django.tasks") else ["django_tasks"]),
    "django_tasks_db",
    "after_response",
    "tests.tasks_app",
]
MIDDLEWARE = ["after_response.middleware.AfterResponseMiddleware"]
DATABASES = {"default": _DATABASE}

# The README's two settings, "one process" and "when you outgrow one process".
TASKS = {
    "after_response": {"default": {"BACKEND": "after_response.tasks.AfterResponseBackend"}},
    "database": {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}},
}[_BACKEND]

AFTER_RESPONSE_WORKERS = 2  # threads per server process
AFTER_RESPONSE_DRAIN_TIMEOUT = 5.0  # seconds; below gunicorn's --graceful-timeout

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "[%(process)d] %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "after_response": {"handlers": ["stderr"], "level": "INFO"},
        "django": {"handlers": ["stderr"], "level": "WARNING"},
        # Each task's start and end: the tests read the db_worker's log for them.
        "django.tasks": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "django_tasks": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "django_tasks_db": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
