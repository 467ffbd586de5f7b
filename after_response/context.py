"""What a deferred call carries over from the request that deferred it, and nothing else.

Captured explicitly, not by copying ``contextvars``: asgiref >= 3.12 (django/asgiref#564)
ignores request-local data of a copied context on another thread, and a copied context would
carry state of the request (user, session) that must not leak into other work. Captured once
per request, at its first ``defer()``: by then the view runs, so the language and time zone
that middleware or the view activated are in place.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from datetime import tzinfo
from typing import TypeVar

from django.conf import settings
from django.http import HttpRequest
from django.urls import (
    get_script_prefix,
    get_urlconf,
    set_script_prefix,
    set_urlconf,
)
from django.utils import timezone, translation

from .deferred import callable_name

T = TypeVar("T")


class CallContext:
    """Language, time zone, script prefix and urlconf; plus a label naming the request."""

    __slots__ = ("label", "language", "script_prefix", "timezone", "urlconf")

    def __init__(
        self,
        label: str,
        language: str | None,
        tz: tzinfo,
        script_prefix: str,
        urlconf: str | None,
    ) -> None:
        self.label = label
        self.language = language
        self.timezone = tz
        self.script_prefix = script_prefix
        self.urlconf = urlconf

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a fresh ``contextvars`` context with these values active."""
        return contextvars.Context().run(self._run, fn)

    def _run(self, fn: Callable[[], T]) -> T:
        # Django keeps all four in asgiref Locals, which live in context variables: set in this
        # fresh context, they vanish with it, so nothing is reset afterwards. What equals the
        # default of a fresh context is not set at all (each Local access costs microseconds).
        if self.language is not None and self.language != settings.LANGUAGE_CODE:
            translation.activate(self.language)
        if self.timezone is not timezone.get_default_timezone():
            timezone.activate(self.timezone)
        if self.script_prefix != "/":
            set_script_prefix(self.script_prefix)
        if self.urlconf is not None:
            set_urlconf(self.urlconf)
        return fn()


def of_request(request: HttpRequest | None) -> CallContext:
    if request is None:  # the request was already collected: a late defer()
        return current("no request")
    # The script prefix and urlconf come from the request: they are what Django's handler
    # and BaseHandler activated from it (set_script_prefix / set_urlconf), and reading them
    # there is much cheaper than through their asgiref Locals.
    path, path_info = request.path, request.path_info
    script_name = path[: len(path) - len(path_info)] if path.endswith(path_info) else ""
    return CallContext(
        request_label(request),
        translation.get_language(),
        timezone.get_current_timezone(),
        script_name.rstrip("/") + "/",
        getattr(request, "urlconf", None),
    )


def current(label: str) -> CallContext:
    """The context of the code running now (outside a request, or inside a deferred call)."""
    return CallContext(
        label,
        translation.get_language(),
        timezone.get_current_timezone(),
        get_script_prefix(),
        get_urlconf(),
    )


def request_label(request: HttpRequest) -> str:
    """Method and route (or view name): never the raw path, which may carry tokens."""
    match = getattr(request, "resolver_match", None)
    where = "unresolved URL"
    if match is not None:
        where = match.route or match.view_name or callable_name(match.func)
    return f"{request.method} {where}"
