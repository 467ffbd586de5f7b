from __future__ import annotations

import math
import threading

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from after_response import conf
from after_response.middleware import AfterResponseMiddleware


def ids(**settings: object) -> list[str]:
    with override_settings(**settings):
        return [m.id for m in run_checks() if m.id and m.id.startswith("after_response")]


def test_the_test_settings_are_clean():
    assert ids() == []


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("AFTER_RESPONSE_WORKERS", 0, "after_response.E001"),
        ("AFTER_RESPONSE_WORKERS", "4", "after_response.E001"),
        ("AFTER_RESPONSE_WORKERS", True, "after_response.E001"),
        ("AFTER_RESPONSE_MAX_PENDING", -1, "after_response.E002"),
        ("AFTER_RESPONSE_WHEN_FULL", "wait", "after_response.E003"),
        ("AFTER_RESPONSE_BLOCK_TIMEOUT", "5", "after_response.E004"),
        ("AFTER_RESPONSE_DRAIN_TIMEOUT", -1.0, "after_response.E005"),
        ("AFTER_RESPONSE_IMMEDIATE", "yes", "after_response.E006"),
        ("AFTER_RESPONSE_SLOW_CALL", 0, "after_response.E007"),
        ("AFTER_RESPONSE_SLOW_CALL", "60", "after_response.E007"),
        # Non-finite: a plain >= 0 lets them through, to fail in a hand-off or at shutdown.
        ("AFTER_RESPONSE_BLOCK_TIMEOUT", math.inf, "after_response.E004"),
        ("AFTER_RESPONSE_BLOCK_TIMEOUT", math.nan, "after_response.E004"),
        ("AFTER_RESPONSE_BLOCK_TIMEOUT", 10**20, "after_response.E004"),
        ("AFTER_RESPONSE_DRAIN_TIMEOUT", math.inf, "after_response.E005"),
        ("AFTER_RESPONSE_DRAIN_TIMEOUT", math.nan, "after_response.E005"),
        ("AFTER_RESPONSE_DRAIN_TIMEOUT", threading.TIMEOUT_MAX * 2, "after_response.E005"),
        ("AFTER_RESPONSE_SLOW_CALL", math.inf, "after_response.E007"),
        ("AFTER_RESPONSE_SLOW_CALL", -math.inf, "after_response.E007"),
        ("AFTER_RESPONSE_SLOW_CALL", math.nan, "after_response.E007"),
        ("AFTER_RESPONSE_CARRY_CONTEXT", "yes", "after_response.E008"),
        ("AFTER_RESPONSE_CARRY_CONTEXT", None, "after_response.E008"),
        ("AFTER_RESPONSE_ONLY_ON_SUCCESS", 1, "after_response.E010"),
    ],
)
def test_bad_settings(setting, value, check_id):
    assert ids(**{setting: value}) == [check_id]
    # The same problem stops the middleware from loading, so a server fails at start-up.
    with (
        override_settings(**{setting: value}),
        pytest.raises(ImproperlyConfigured, match=check_id.replace(".", r"\.")),
    ):
        AfterResponseMiddleware(lambda request: None)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("AFTER_RESPONSE_BLOCK_TIMEOUT", "must be a finite number of seconds >= 0"),
        ("AFTER_RESPONSE_DRAIN_TIMEOUT", "must be a finite number of seconds >= 0"),
        ("AFTER_RESPONSE_SLOW_CALL", "must be a finite number of seconds > 0 (at most "),
    ],
)
def test_an_infinite_timeout_is_refused_with_the_fix(setting, message):
    with override_settings(**{setting: math.inf}):
        [error] = [m for m in run_checks() if m.id and m.id.startswith("after_response")]
    assert message in error.msg and error.msg.endswith("got inf.")


def test_the_largest_timeouts_pass():
    longest = threading.TIMEOUT_MAX
    assert (
        ids(
            AFTER_RESPONSE_BLOCK_TIMEOUT=longest,
            AFTER_RESPONSE_DRAIN_TIMEOUT=int(longest),
            AFTER_RESPONSE_SLOW_CALL=longest,
        )
        == []
    )


def test_good_values_pass():
    assert (
        ids(
            AFTER_RESPONSE_WORKERS=1,
            AFTER_RESPONSE_MAX_PENDING=10,
            AFTER_RESPONSE_WHEN_FULL="drop",
            AFTER_RESPONSE_BLOCK_TIMEOUT=0,
            AFTER_RESPONSE_DRAIN_TIMEOUT=5,
            AFTER_RESPONSE_IMMEDIATE=True,
            AFTER_RESPONSE_SLOW_CALL=None,
        )
        == []
    )
    assert conf.get() == conf.DEFAULTS


def test_missing_middleware_is_a_warning():
    assert ids(MIDDLEWARE=[]) == ["after_response.W001"]


def test_a_connection_pool_smaller_than_the_workers(settings):
    from django.db import connections

    options = connections.settings["default"].setdefault("OPTIONS", {})
    options["pool"] = {"min_size": 1, "max_size": 2}
    try:
        assert ids() == ["after_response.W002"]
        options["pool"] = {"min_size": 1, "max_size": 8}
        assert ids() == []
        options["pool"] = True  # psycopg_pool's default size is 4, as many as the workers
        assert ids() == ["after_response.W002"]
        assert ids(AFTER_RESPONSE_WORKERS=3) == []
    finally:
        del options["pool"]


def test_the_clashing_distribution_is_an_error(tmp_path, monkeypatch):
    """django-after-response installs a package of the same name into ours: found through its
    installed metadata, the way pip leaves it (a dist-info directory on the path)."""
    import sys

    info = tmp_path / "django_after_response-0.2.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: django-after-response\nVersion: 0.2.2\n"
    )
    (info / "top_level.txt").write_text("after_response\n")
    assert ids() == []
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    messages = [m for m in run_checks() if m.id == "after_response.E009"]
    assert len(messages) == 1
    assert "'django-after-response' 0.2.2 is installed" in messages[0].msg
    assert "pip uninstall django-after-response after_response" in messages[0].hint
