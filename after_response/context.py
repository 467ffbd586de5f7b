"""What a deferred call carries over from the request that deferred it.

The call runs in a context of its own, made in the worker: a copy of the request's
``contextvars`` minus what belongs to the request's thread (carry.py: Sentry's scopes,
OpenTelemetry's span, request ids, yes; database connections, cache clients, the request, no),
plus the four values Django keeps in asgiref ``Local`` storage, which a copy does not carry
across threads: language, time zone, script prefix and urlconf, set again from the request.
Captured once per request, at its first ``defer()``: by then the view runs, so what middleware
and the view activated is in place. The capture is cheap: a copy of the context (O(1)), the
script prefix and urlconf read from the request, the language and time zone read later from
that copy, in a worker (``snapshot.py``).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from datetime import tzinfo
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpRequest
from django.urls import (
    get_script_prefix,
    get_urlconf,
    set_script_prefix,
    set_urlconf,
)
from django.utils import timezone, translation

from . import conf, snapshot
from .carry import Carried
from .deferred import callable_name

T = TypeVar("T")


class CallContext:
    """Language, time zone, script prefix and urlconf; plus a label naming the request.

    Built on the request path, where it only keeps references: the rest is worked out from them
    when a worker needs it.
    """

    __slots__ = (
        "_activations",
        "_asgi_script_name",
        "_carried",
        "_label",
        "_language",
        "_request_info",
        "_script_prefix",
        "_snapshot",
        "_timezone",
        "urlconf",
    )

    def __init__(
        self,
        label: str,
        language: str | None,
        tz: tzinfo,
        script_prefix: str,
        urlconf: str | None,
    ) -> None:
        self._label: str | None = label
        self._activations: tuple[tuple[Callable[[Any], object], Any], ...] | None = None
        self._language = language
        self._timezone: tzinfo | None = tz
        self._script_prefix: str | None = script_prefix
        self._snapshot: snapshot.Snapshot | None = None
        # Method, resolver match, path and path_info of the request, or None.
        self._request_info: tuple[str | None, Any, str, str] | None = None
        self._asgi_script_name: str | None = None
        self.urlconf = urlconf
        self._carried = Carried(
            contextvars.copy_context() if conf.get().CARRY_CONTEXT else None, None
        )

    @classmethod
    def of(cls, request: HttpRequest) -> CallContext:
        self = cls.__new__(cls)
        self._label = self._script_prefix = self._activations = None
        carrying = conf.get().CARRY_CONTEXT
        if snapshot.available:
            taken = self._snapshot = snapshot.take()
            self._language = self._timezone = None
            self._carried = Carried(taken[0] if carrying else None, request)
        else:
            self._snapshot = None
            self._language = translation.get_language()
            self._timezone = timezone.get_current_timezone()
            self._carried = Carried(contextvars.copy_context() if carrying else None, request)
        # HttpRequest has no __slots__: reading __dict__ skips the cost of a missing attribute.
        attributes = request.__dict__
        self._request_info = (
            request.method,
            attributes.get("resolver_match"),
            request.path,
            request.path_info,
        )
        self._asgi_script_name = attributes.get("script_name")
        self.urlconf = attributes.get("urlconf")
        return self

    @property
    def label(self) -> str:
        """Method and route (or view name) of the request, never its path (which may carry
        tokens); or what ran outside a request ("no request")."""
        if self._label is None:
            method, match, _, _ = self._request_info  # type: ignore[misc]
            self._label = label_of(method, match)
        return self._label

    @property
    def route(self) -> str | None:
        """The route of the request's URL pattern, if it has one."""
        info = self._request_info
        match = None if info is None else info[1]
        return getattr(match, "route", None) or None

    @property
    def language(self) -> str | None:
        if self._snapshot is not None:
            self._resolve()
        return self._language

    @property
    def timezone(self) -> tzinfo:
        if self._snapshot is not None:
            self._resolve()
        return self._timezone  # type: ignore[return-value]

    def _resolve(self) -> None:
        taken = self._snapshot
        if taken is not None:
            self._language = snapshot.language(taken)
            self._timezone = snapshot.current_timezone(taken)
            self._snapshot = None  # and the copied context with it

    @property
    def script_prefix(self) -> str:
        if self._script_prefix is None:
            # What Django's handler activated for the request (set_script_prefix). ASGIRequest
            # keeps it (FORCE_SCRIPT_NAME or the scope's root_path), and its path need not
            # start with it; WSGIRequest's path is that prefix followed by path_info.
            _, _, path, path_info = self._request_info  # type: ignore[misc]
            if self._asgi_script_name is not None:
                script_name = self._asgi_script_name
            elif path.endswith(path_info):
                script_name = path[: len(path) - len(path_info)]
            else:
                script_name = ""
            self._script_prefix = script_name.rstrip("/") + "/"
        return self._script_prefix

    def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Run ``fn(*args)`` in a context of its own, with what the request carried."""
        return self._carried.context().run(self._run, fn, args)

    def log(self, log: logging.Logger, level: int, msg: str, *args: Any, **extra: Any) -> None:
        """Log about a call in its carried context, where request-id filters find their ids."""
        self._carried.context().run(log.log, level, msg, *args, extra=extra)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        # Django keeps all four in asgiref Locals, which live in context variables: set in this
        # context of the call's own, they vanish with it, so nothing is reset afterwards. What
        # equals the default is not set at all (each Local access costs microseconds), and what
        # is set is worked out once for all the calls of a request.
        activations = self._activations
        if activations is None:
            activations = self._activations = self._work_out_activations()
        for activate, value in activations:
            activate(value)
        carried = self._carried
        if not carried.restores:  # the usual case: no pair registered, no Sentry imported
            return fn(*args)
        restoring = carried.restoring()
        if restoring is None:
            return fn(*args)
        with restoring:
            return fn(*args)

    def _work_out_activations(self) -> tuple[tuple[Callable[[Any], object], Any], ...]:
        activations: list[tuple[Callable[[Any], object], Any]] = []
        language = self.language
        if language is not None and language != settings.LANGUAGE_CODE:
            activations.append((translation.activate, language))
        if self.timezone is not timezone.get_default_timezone():
            activations.append((timezone.activate, self.timezone))
        if self.script_prefix != "/":
            activations.append((set_script_prefix, self.script_prefix))
        if self.urlconf is not None:
            activations.append((set_urlconf, self.urlconf))
        return tuple(activations)


def of_request(request: HttpRequest | None) -> CallContext:
    if request is None:  # a first defer() after the response was closed
        return current("no request")
    # The script prefix and urlconf come from the request: they are what Django's handler
    # and BaseHandler activated from it (set_script_prefix / set_urlconf), and reading them
    # there is much cheaper than through their asgiref Locals.
    return CallContext.of(request)


def current(label: str) -> CallContext:
    """The context of the code running now (outside a request, or inside a deferred call)."""
    return CallContext(
        label,
        translation.get_language(),
        timezone.get_current_timezone(),
        get_script_prefix(),
        get_urlconf(),
    )


def label_of(method: str | None, match: Any) -> str:
    where = "unresolved URL"
    if match is not None:
        where = match.route or match.view_name or callable_name(match.func)
    return f"{method} {where}"
