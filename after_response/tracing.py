"""OpenTelemetry, when a tracer provider is set up: used, never imported here.

One span per call, ``after_response <callable>``, a child of the span that was current where
the request deferred it (carried with the context, carry.py): the call shows in the request's
own trace, under the request, where trace views put it on the same timeline. A span link
would start a trace of its own per call, which most trace views show apart from the request.
Spans the call creates are children of its span.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

from .deferred import DeferredCall

# (provider, tracer): a tracer is made once per provider.
_tracer: tuple[Any, Any] = (None, None)


def tracer() -> Any:
    """This library's tracer, or None if OpenTelemetry has no provider set (or is absent)."""
    global _tracer
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    cached_provider, cached = _tracer
    if provider is cached_provider:
        return cached
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        made = None  # nothing would be recorded: no span at all is cheaper
    else:
        from importlib import metadata

        try:
            version: str | None = metadata.version("after_response")
        except metadata.PackageNotFoundError:  # run from a checkout without installing
            version = None
        made = provider.get_tracer("after_response", version)
    _tracer = (provider, made)
    return made


class CallSpan:
    """The span of one call: current while it runs; records its outcome and exception."""

    __slots__ = ("_manager", "_span")

    def __init__(self, tracer: Any, call: DeferredCall, label: str, route: str | None) -> None:
        name = call.name
        attributes: dict[str, Any] = {
            "after_response.callable": name,
            "after_response.request": label,
        }
        if route:
            attributes["http.route"] = route
        if call.queued_at:
            waited = max(0.0, time.monotonic() - call.queued_at)
            attributes["after_response.backlog_wait_ms"] = round(waited * 1000, 3)
        self._manager = tracer.start_as_current_span(
            f"after_response {name}", attributes=attributes
        )

    def __enter__(self) -> CallSpan:
        self._span = self._manager.__enter__()
        return self

    def settle(self, error: BaseException | None) -> None:
        """Record how the call ended (the runner catches its exception)."""
        span = self._span
        if error is None:
            span.set_attribute("after_response.outcome", "done")
            return
        span.set_attribute("after_response.outcome", "failed")
        span.record_exception(error)
        trace = sys.modules["opentelemetry.trace"]
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return self._manager.__exit__(exc_type, exc, tb)  # type: ignore[no-any-return]
