"""The end-to-end project with the observability tools users run, for tests/test_observability.py.

Sentry sends to the test's local ingest server (``OBSERVED_SENTRY_DSN``), with its logging
integration on or off (``OBSERVED_SENTRY_LOGGING``); OpenTelemetry's SDK records into an
in-memory exporter that ``/observed/spans/`` reads out, with Django's instrumentation; django-guid
puts the request's correlation id into every log line.
"""

from __future__ import annotations

import importlib.util
import os

import sentry_sdk
from opentelemetry import trace
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sentry_sdk.integrations.dedupe import DedupeIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

from tests.e2e.settings import *  # noqa: F403
from tests.e2e.settings import INSTALLED_APPS, MIDDLEWARE

ROOT_URLCONF = "tests.e2e.observed_urls"
GUID = importlib.util.find_spec("django_guid") is not None  # not installable everywhere
if GUID:
    INSTALLED_APPS = [*INSTALLED_APPS, "django_guid"]
    MIDDLEWARE = ["django_guid.middleware.guid_middleware", *MIDDLEWARE]
    DJANGO_GUID = {"GUID_HEADER_NAME": "Correlation-ID", "VALIDATE_GUID": False}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "correlation_id": {
            "()": "django_guid.log_filters.CorrelationId" if GUID else "logging.Filter"
        }
    },
    "formatters": {
        "plain": {
            "format": "[%(process)d] %(levelname)s %(name)s "
            + ("[%(correlation_id)s] " if GUID else "")
            + "%(message)s"
        }
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["correlation_id"],
        }
    },
    "loggers": {
        "after_response": {"handlers": ["stderr"], "level": "INFO"},
        "tests": {"handlers": ["stderr"], "level": "INFO"},
    },
}

EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_provider)
DjangoInstrumentor().instrument()

_logging_on = os.environ.get("OBSERVED_SENTRY_LOGGING") == "1"
sentry_sdk.init(
    dsn=os.environ["OBSERVED_SENTRY_DSN"],
    integrations=[DjangoIntegration()],
    # With the logging integration on, Sentry's own de-duplication is off: the library must not
    # rely on it to send one event per failed call.
    disabled_integrations=[DedupeIntegration] if _logging_on else [LoggingIntegration],
    traces_sample_rate=1.0,
    send_default_pii=True,
)
