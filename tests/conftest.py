from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import after_response

from . import recorder


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return
    import psycopg

    db = settings.DATABASES["default"]
    try:
        psycopg.connect(
            host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres", connect_timeout=3
        ).close()
    except psycopg.OperationalError as exc:
        if os.environ.get("AFTER_RESPONSE_REQUIRE_POSTGRES"):
            raise pytest.UsageError(f"PostgreSQL is required but unreachable: {exc}") from exc
        skip = pytest.mark.skip(reason=f"PostgreSQL at {db['HOST']}:{db['PORT']} unreachable")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    recorder.reset()
    yield
    # Every test leaves the pool idle, so that no call leaks into the next test.
    assert after_response.drain(recorder.WAIT), "deferred calls still running after the test"
