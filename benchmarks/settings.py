"""Settings of the benchmarks, in-process and under gunicorn (served.py).

Read from the environment, so that a benchmark and the gunicorn it starts agree:
``BENCH_DB`` (``sqlite`` or ``postgres``), ``BENCH_DB_NAME`` (the SQLite file, or the
PostgreSQL database), ``BENCH_PG_NAME`` (a PostgreSQL database beside a SQLite one),
``BENCH_AFTER_RESPONSE`` (JSON of ``AFTER_RESPONSE_*`` settings, without the prefix) and
``BENCH_LOG_LEVEL`` (of the ``after_response`` logger).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

DB = os.environ.get("BENCH_DB", "sqlite")
DB_NAME = os.environ.get("BENCH_DB_NAME") or str(
    Path(tempfile.gettempdir()) / f"after_response_bench_{os.getpid()}.sqlite3"
)
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = os.environ.get("PGPORT", "5432")
PG_USER = os.environ.get("PGUSER", "postgres")

SECRET_KEY = "benchmarks"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = True
LANGUAGE_CODE = "en"
ROOT_URLCONF = "benchmarks.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = ["after_response", "benchmarks"]
MIDDLEWARE = ["after_response.middleware.AfterResponseMiddleware"]


def _database(conn_max_age: int, db: str = DB, name: str = DB_NAME) -> dict[str, object]:
    if db == "postgres":
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": PG_USER,
            "HOST": PG_HOST,
            "PORT": PG_PORT,
            "CONN_MAX_AGE": conn_max_age,
        }
    # WAL and a busy timeout: several worker threads read and write the file at once.
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": name,
        "CONN_MAX_AGE": conn_max_age,
        "OPTIONS": {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
    }


# Django's default CONN_MAX_AGE = 0 (a connection per request, and per deferred call), and the
# same database with persistent connections, for drain.py's comparison.
DATABASES = {"default": _database(0), "persistent": _database(60)}
# BENCH_PG_NAME: a PostgreSQL database beside a SQLite default (drain.py compares both).
if os.environ.get("BENCH_PG_NAME"):
    DATABASES["pg"] = _database(0, "postgres", os.environ["BENCH_PG_NAME"])
    DATABASES["pg_persistent"] = _database(60, "postgres", os.environ["BENCH_PG_NAME"])

for _name, _value in json.loads(os.environ.get("BENCH_AFTER_RESPONSE", "{}")).items():
    globals()[f"AFTER_RESPONSE_{_name}"] = _value

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "after_response": {
            "handlers": ["stderr"],
            "level": os.environ.get("BENCH_LOG_LEVEL", "ERROR"),
            "propagate": False,
        }
    },
}
