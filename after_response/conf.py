"""Settings, read lazily so that ``override_settings`` works; cached until a setting changes."""

from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

PREFIX = "AFTER_RESPONSE_"
_AT_MOST = f" (at most {threading.TIMEOUT_MAX:.0f})"  # seconds: what waits accept


@dataclasses.dataclass(frozen=True)
class Config:
    WORKERS: int = 4  # threads per process
    MAX_PENDING: int = 1000  # calls queued and not yet started, per process
    WHEN_FULL: str = "block"  # or "drop"
    BLOCK_TIMEOUT: float = 5.0  # seconds a hand-off waits for room before dropping
    DRAIN_TIMEOUT: float = 25.0  # seconds; below gunicorn's 30 s graceful timeout
    IMMEDIATE: bool = False  # run calls inline when the response closes (tests)
    SLOW_CALL: float | None = 60.0  # seconds before a running call is reported; None: never
    CARRY_CONTEXT: bool = True  # calls run with the deferring code's context variables
    ONLY_ON_SUCCESS: bool = False  # by default, run a request's calls only after a 1xx-3xx


DEFAULTS = Config()
NAMES = tuple(field.name for field in dataclasses.fields(Config))


def read() -> Config:
    return Config(
        **{name: getattr(settings, PREFIX + name, getattr(DEFAULTS, name)) for name in NAMES}
    )


def problems(config: Config) -> list[tuple[str, str]]:
    """(check id, message) for each invalid setting."""
    found = []

    def number(value: object) -> bool:
        # inf, NaN and the like would pass a plain >= 0 and fail later, in a hand-off (losing
        # calls) or at shutdown: Python's waits take at most threading.TIMEOUT_MAX seconds.
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and 0 <= value <= threading.TIMEOUT_MAX
        )

    def positive_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if not positive_int(config.WORKERS):
        found.append(
            ("E001", f"AFTER_RESPONSE_WORKERS must be a positive int, got {config.WORKERS!r}.")
        )
    if not positive_int(config.MAX_PENDING):
        found.append(
            (
                "E002",
                f"AFTER_RESPONSE_MAX_PENDING must be a positive int, got {config.MAX_PENDING!r}.",
            )
        )
    if config.WHEN_FULL not in ("block", "drop"):
        found.append(
            (
                "E003",
                f"AFTER_RESPONSE_WHEN_FULL must be 'block' or 'drop', got {config.WHEN_FULL!r}.",
            )
        )
    if not number(config.BLOCK_TIMEOUT):
        found.append(
            (
                "E004",
                f"AFTER_RESPONSE_BLOCK_TIMEOUT must be a finite number of seconds >= 0{_AT_MOST}, "
                f"got {config.BLOCK_TIMEOUT!r}.",
            )
        )
    if not number(config.DRAIN_TIMEOUT):
        found.append(
            (
                "E005",
                f"AFTER_RESPONSE_DRAIN_TIMEOUT must be a finite number of seconds >= 0{_AT_MOST}, "
                f"got {config.DRAIN_TIMEOUT!r}.",
            )
        )
    if not isinstance(config.IMMEDIATE, bool):
        found.append(
            ("E006", f"AFTER_RESPONSE_IMMEDIATE must be True or False, got {config.IMMEDIATE!r}.")
        )
    if config.SLOW_CALL is not None and not (number(config.SLOW_CALL) and config.SLOW_CALL > 0):
        found.append(
            (
                "E007",
                f"AFTER_RESPONSE_SLOW_CALL must be a finite number of seconds > 0{_AT_MOST}, "
                f"or None to turn the warning off, got {config.SLOW_CALL!r}.",
            )
        )
    if not isinstance(config.CARRY_CONTEXT, bool):
        found.append(
            (
                "E008",
                "AFTER_RESPONSE_CARRY_CONTEXT must be True or False, "
                f"got {config.CARRY_CONTEXT!r}.",
            )
        )
    if not isinstance(config.ONLY_ON_SUCCESS, bool):
        found.append(
            (
                "E010",
                "AFTER_RESPONSE_ONLY_ON_SUCCESS must be True or False, "
                f"got {config.ONLY_ON_SUCCESS!r}.",
            )
        )
    return found


@functools.cache
def get() -> Config:
    config = read()
    found = problems(config)
    if found:
        check_id, message = found[0]
        raise ImproperlyConfigured(f"{message} (after_response.{check_id})")
    return config


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith(PREFIX):
        get.cache_clear()
