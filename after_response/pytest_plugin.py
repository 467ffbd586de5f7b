"""pytest plugin (registered through the ``pytest11`` entry point): fixtures for deferred work."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest


@pytest.fixture
def capture_deferred() -> Callable[..., AbstractContextManager[list[Any]]]:
    """``after_response.testing.capture_deferred``, as a fixture:

    ``with capture_deferred(execute=True) as calls: client.post(...)``
    """
    from after_response.testing import capture_deferred

    return capture_deferred


@pytest.fixture
def deferring() -> Callable[[Any], Any]:
    """``after_response.testing.deferring``, as a fixture: ``view(deferring(rf.get("/")))``."""
    from after_response.testing import deferring

    return deferring


@pytest.fixture(autouse=True)
def _after_response_inline_failures() -> Iterator[None]:
    """Fail the test if a call run inline under ``AFTER_RESPONSE_IMMEDIATE`` raised."""
    from django.conf import settings

    active = settings.configured and "after_response" in settings.INSTALLED_APPS
    if active:
        from after_response import runtime

        runtime.inline_failures.clear()
    yield
    if active:
        from after_response.testing import raise_inline_failures

        raise_inline_failures()
