"""Settings of the demo: DEBUG on, SQLite next to manage.py (SAMPLE_SITE_DB overrides the path).

Uploads, sent mail and the published catalogue go under var/ (SAMPLE_SITE_DATA overrides it).
"""

from __future__ import annotations

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SAMPLE_SITE_DATA", BASE_DIR / "var"))

SECRET_KEY = "django-insecure-after-response-demo"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "after_response",
    "demo",
]

MIDDLEWARE = [
    # First, so that it sees the response the server actually sends.
    "after_response.middleware.AfterResponseMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "sample_site.urls"
WSGI_APPLICATION = "sample_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SAMPLE_SITE_DB", BASE_DIR / "db.sqlite3"),
        # Request threads and after_response's worker threads write at the same time. WAL lets
        # readers and a writer overlap; the timeout makes a writer wait for the lock instead of
        # failing with "database is locked"; IMMEDIATE takes the write lock when a transaction
        # starts, because one that must upgrade from a read lock later cannot wait for it.
        "OPTIONS": {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
        },
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
MEDIA_ROOT = DATA_DIR / "uploads"  # default_storage: where uploaded imports wait for their job

# Mail is written to files, one per connection (the tests use Django's locmem backend).
MAIL_DIR = DATA_DIR / "mail"
if django.VERSION >= (6, 1):
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "OPTIONS": {"file_path": str(MAIL_DIR)},
        }
    }
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = MAIL_DIR
DEFAULT_FROM_EMAIL = "catalogue@example.com"

AFTER_RESPONSE_WORKERS = 4  # threads per gunicorn worker process (this is the default)

# The demo's own settings.
DEMO_CONTENT_TEAM = ["content-team@example.com"]  # told about books with impossible data
DEMO_MAX_UPLOAD_BYTES = 5 * 1024 * 1024
# An import without progress for this long is reported as stalled (its process has died).
DEMO_STALLED_AFTER = float(os.environ.get("SAMPLE_SITE_STALLED_AFTER", "60"))  # seconds
DEMO_SNAPSHOT_PATH = DATA_DIR / "public" / "catalogue.html"  # the published static catalogue
# The "other system": None means the fake one inside this demo, at /fake-remote/ on the host
# the request came to (a real site names the service's URL here).
DEMO_REMOTE_URL = os.environ.get("SAMPLE_SITE_REMOTE_URL")
# Seconds, for every call to the remote service.
DEMO_REMOTE_TIMEOUT = float(os.environ.get("SAMPLE_SITE_REMOTE_TIMEOUT", "3"))
DEMO_REMOTE_LATENCY = float(os.environ.get("SAMPLE_SITE_REMOTE_LATENCY", "0.5"))  # seconds
DEMO_OFFER_MAX_AGE = float(os.environ.get("SAMPLE_SITE_OFFER_MAX_AGE", "30"))  # seconds fresh
DEMO_REFRESH_LEASE = 30.0  # seconds a refresh may take before another reader may retry it

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "after_response": {"handlers": ["console"], "level": "INFO"},
        "demo": {"handlers": ["console"], "level": "INFO"},
        "httpx": {"handlers": ["console"], "level": "WARNING"},
    },
}
