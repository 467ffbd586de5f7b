"""Sentry (sentry-sdk 2.x), when it is installed and initialised: used, never imported here.

A call runs in forks of the request's scopes, as Sentry's own threading integration runs a
thread: its tags, user, transaction name and trace id; what the call sets stays in its fork.
A failed call becomes one error event with the callable and the request's route, whether or not
Sentry's logging integration is on: the logging integration's event for the same exception (from
the library's "Deferred call ... failed" line) is dropped, its breadcrumb kept.

The request's URL and user, which Sentry's Django integration reads from the request object when
an event is sent, are taken when the request first defers: the request is gone by then.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest


def _sdk() -> Any:
    sdk = sys.modules.get("sentry_sdk")
    if sdk is None:
        return None
    try:
        return sdk if sdk.get_client().is_active() else None
    except Exception:  # a sentry_sdk we do not know
        return None


def active() -> bool:
    return _sdk() is not None


def capture(request: HttpRequest | None) -> dict[str, Any] | None:
    """What Sentry would read from the request; in the request's thread, at its first defer."""
    sdk = _sdk()
    if sdk is None or request is None:
        return None
    taken: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        # Like Sentry's request data: no query string, no body.
        taken["request"] = {
            "method": request.method,
            "url": f"{request.scheme}://{request.get_host()}{request.path}",
        }
    with contextlib.suppress(Exception):
        # Only a user the request already loaded: loading one here could query the database
        # from an event loop (an async view), and Sentry only sends it with send_default_pii.
        user: Any = request.__dict__.get("_cached_user") or request.__dict__.get("_acached_user")
        pii = user is not None and sdk.get_client().should_send_default_pii()
        if pii and getattr(user, "is_authenticated", False):
            taken["user"] = {"id": str(user.pk), "username": user.get_username()}
            email = getattr(user, "email", None)
            if email:
                taken["user"]["email"] = email
    return taken


@contextlib.contextmanager
def scopes(taken: dict[str, Any] | None) -> Iterator[None]:
    """Run in forks of the scopes current here (the request's, carried)."""
    sdk = _sdk()
    if sdk is None:
        yield
        return
    from sentry_sdk.scope import use_isolation_scope, use_scope

    isolation = sdk.get_isolation_scope().fork()
    if taken:

        def add_request(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
            # After the scopes' own data: a user set with sentry_sdk.set_user() wins.
            for key, value in taken.items():
                if not event.get(key):
                    event[key] = dict(value)
            return event

        isolation.add_event_processor(add_request)
    with use_isolation_scope(isolation), use_scope(sdk.get_current_scope().fork()):
        yield


@contextlib.contextmanager
def reporting(exc: BaseException, name: str, label: str) -> Iterator[None]:
    """Send one error event for a failed call; the block logs it without a second event."""
    sdk = _sdk()
    if sdk is None:
        yield
        return
    with sdk.new_scope() as scope:
        scope.set_tag("after_response.callable", name)
        scope.set_tag("after_response.request", label)
        scope.set_context("after_response", {"callable": name, "request": label})
        sdk.capture_exception(exc)

        def drop_logged(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
            exc_info = hint.get("exc_info") if hint else None
            if exc_info and exc_info[1] is exc:
                return None
            return event

        scope.add_event_processor(drop_logged)
        yield
