"""Settings for the test suite. AFTER_RESPONSE_TEST_DB=postgres runs it on PostgreSQL."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DB = os.environ.get("AFTER_RESPONSE_TEST_DB", "sqlite")
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = os.environ.get("PGPORT", "5432")
PG_USER = os.environ.get("PGUSER", "postgres")
# Several runs (Python versions) may share one PostgreSQL: keep their test databases apart.
SUFFIX = os.environ.get("AFTER_RESPONSE_TEST_DB_SUFFIX", str(os.getpid()))
SQLITE_DIR = Path(os.environ.get("AFTER_RESPONSE_SQLITE_DIR", tempfile.gettempdir()))

SECRET_KEY = "tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = True
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "French"), ("de", "German")]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "after_response",
    "tests",
]
MIDDLEWARE = [
    "after_response.middleware.AfterResponseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {},
    }
]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


def _postgres(name: str) -> dict[str, object]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": PG_USER,
        "HOST": PG_HOST,
        "PORT": PG_PORT,
        "CONN_MAX_AGE": 0,
        "TEST": {"NAME": f"test_after_response_{name}_{SUFFIX}"},
    }


def _sqlite(name: str) -> dict[str, object]:
    # A file, not :memory:, so that worker threads see what the test wrote. WAL and a busy
    # timeout let several threads write without "database is locked".
    path = str(SQLITE_DIR / f"after_response_{name}_{SUFFIX}.sqlite3")
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        "OPTIONS": {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
        "TEST": {"NAME": path},
    }


if DB == "postgres":
    DATABASES = {"default": _postgres("default"), "other": _postgres("other")}
else:
    DATABASES = {"default": _sqlite("default"), "other": _sqlite("other")}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"after_response": {"handlers": ["null"], "level": "DEBUG"}},
}
