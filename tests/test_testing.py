"""The helpers for testing code that defers: immediate mode, capture_deferred, factories."""

from __future__ import annotations

from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client, override_settings

import after_response
from after_response.testing import (
    AsyncRequestFactory,
    DeferredCallFailed,
    RequestFactory,
    capture_deferred,
    raise_inline_failures,
)

from . import recorder, views
from .models import Record

pytest_plugins = ["pytester"]

immediate = override_settings(AFTER_RESPONSE_IMMEDIATE=True)


@pytest.mark.django_db
@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_immediate_mode_runs_inline_and_sees_the_test_transaction(client_class):
    Record.objects.create(name="made by the test")  # uncommitted: TestCase's transaction
    with immediate:
        client = client_class()
        if isinstance(client, AsyncClient):
            async_to_sync(client.get)("/count/")
        else:
            client.get("/count/")
        # Inline: done by the time the client returns, no drain needed.
        assert recorder.calls == [("count", 1)]
        assert after_response.stats().done == 1


@pytest.mark.django_db
def test_immediate_mode_failures_fail_the_test():
    with immediate:
        Client().get("/failing/")
        assert recorder.names() == ["boom", "after-boom"]
        with pytest.raises(DeferredCallFailed, match="boom failed on purpose"):
            raise_inline_failures()
        raise_inline_failures()  # reported once


def test_the_pytest_plugin_fails_a_test_whose_deferred_call_raised(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    pytester.makepyfile(
        """
        import pytest
        from django.test import Client, override_settings

        @pytest.mark.django_db
        @override_settings(AFTER_RESPONSE_IMMEDIATE=True)
        def test_view():
            assert Client().get("/failing/").status_code == 500
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--ds=tests.settings", "-W", "ignore"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*DeferredCallFailed*boom failed on purpose*"])


@pytest.mark.django_db
def test_capture_deferred_collects_without_running():
    with capture_deferred() as calls:
        Client().get("/defer-two/")
    assert [call.args for call in calls] == [("first",), ("second",)]
    assert recorder.names() == []
    assert after_response.drain(recorder.WAIT)
    assert recorder.names() == []


@pytest.mark.django_db
def test_capture_deferred_execute_runs_follow_ups_and_raises():
    def follow_up() -> None:
        recorder.record("outer")
        after_response.defer(recorder.record, "follow-up")

    with capture_deferred(execute=True) as calls:
        after_response.defer(follow_up)
    assert recorder.names() == ["outer", "follow-up"]
    assert len(calls) == 2

    with pytest.raises(DeferredCallFailed) as raised, capture_deferred(execute=True):
        Client().get("/failing/")
    assert isinstance(raised.value.__cause__, ValueError)
    assert recorder.names()[-2:] == ["boom", "after-boom"]


def test_the_capture_deferred_fixture(capture_deferred):
    with capture_deferred() as calls:
        after_response.defer(recorder.record, "captured")
    assert [call.args for call in calls] == [("captured",)]


def test_request_factory_requests_can_defer():
    request = RequestFactory().get("/")
    with capture_deferred() as calls:
        response = views.defer_two(request)
    assert response.status_code == 200
    assert [call.args for call in calls] == [("first",), ("second",)]


def test_async_request_factory_requests_can_defer():
    request = AsyncRequestFactory().get("/")
    with capture_deferred(execute=True) as calls:
        async_to_sync(views.defer_async)(request)
    assert sorted(recorder.names()) == ["async-view", "coroutine"]
    assert len(calls) == 2


def test_the_pytest_plugin_imports_no_django_module():
    """pytest loads the plugin in every project where after_response is installed, Django or
    not: importing it (and the package) must stay cheap."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, after_response.pytest_plugin, after_response; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert loaded.stdout.strip() == "[]"
