"""System checks: after_response.E001 ... for settings, W001 ... for set-ups that misbehave."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections

from . import conf

MIDDLEWARE_PATH = "after_response.middleware.AfterResponseMiddleware"


@register(Tags.compatibility)
def check_settings(**kwargs: Any) -> list[CheckMessage]:
    return [
        Error(
            message,
            hint="See the Settings section of after_response's README.",
            id=f"after_response.{check_id}",
        )
        for check_id, message in conf.problems(conf.read())
    ]


@register(Tags.compatibility)
def check_middleware(**kwargs: Any) -> list[CheckMessage]:
    if MIDDLEWARE_PATH in settings.MIDDLEWARE:
        return []
    return [
        Warning(
            f"{MIDDLEWARE_PATH} is not in MIDDLEWARE: request.defer() does not exist and "
            "after_response.defer() in a view hands the call off at once, before the response.",
            hint=f"Add '{MIDDLEWARE_PATH}' to MIDDLEWARE (near the top).",
            id="after_response.W001",
        )
    ]


@register(Tags.compatibility)
def check_connection_pools(**kwargs: Any) -> list[CheckMessage]:
    workers = conf.read().WORKERS
    if not isinstance(workers, int):
        return []  # reported by check_settings
    messages: list[CheckMessage] = []
    for alias in connections:
        options = connections.settings[alias].get("OPTIONS", {})
        pool = options.get("pool") if isinstance(options, dict) else None
        if not pool:
            continue
        # psycopg_pool: max_size defaults to min_size, which defaults to 4.
        max_size = (
            (pool.get("max_size") or pool.get("min_size") or 4) if isinstance(pool, dict) else 4
        )
        if isinstance(max_size, int) and max_size <= workers:
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}] uses a connection pool of at most {max_size} "
                    f"connections, no more than AFTER_RESPONSE_WORKERS = {workers}: busy worker "
                    "threads can take every connection and make requests wait for one.",
                    hint="Make OPTIONS['pool']['max_size'] more than AFTER_RESPONSE_WORKERS plus "
                    "the server's threads per process, or lower AFTER_RESPONSE_WORKERS.",
                    id="after_response.W002",
                )
            )
    return messages


# Another project on the package index whose top-level package is also named after_response.
CLASHING_DISTRIBUTION = "django-after-response"


@register(Tags.compatibility)
def check_clashing_distribution(**kwargs: Any) -> list[CheckMessage]:
    try:
        other = metadata.distribution(CLASHING_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return []
    return [
        Error(
            f"The package {CLASHING_DISTRIBUTION!r} {other.version} is installed: its top-level "
            "package is also named after_response, and it installs files into ours (models.py, "
            "store.py, its own __init__.py and signals.py), or deletes ours when uninstalled.",
            hint=f"pip uninstall {CLASHING_DISTRIBUTION} after_response, then install "
            "after_response again.",
            id="after_response.E009",
        )
    ]
