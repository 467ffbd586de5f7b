"""An ASGI application that drains deferred calls when the server shuts down.

uvicorn (>= 0.29) ends with the SIGTERM it received, running neither ``atexit`` nor
``threading``'s exit hooks; Django's ASGI handler rejects the lifespan scope, where a server
says it is stopping. This wrapper answers the lifespan protocol and drains on
``lifespan.shutdown``; every other scope goes to Django unchanged. In ``asgi.py``::

    from after_response.asgi import get_asgi_application

    application = get_asgi_application()
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def get_asgi_application() -> ASGIApp:
    """Django's ``get_asgi_application()``, wrapped with ``DrainOnShutdown``."""
    from django.core.asgi import get_asgi_application as django_application

    return DrainOnShutdown(django_application())


class DrainOnShutdown:
    """Wrap an ASGI application: answer the lifespan protocol, drain on shutdown.

    A lifespan scope the wrapped application handles itself (Starlette, a custom router) is
    passed on, with the drain run when it completes shutdown.
    """

    def __init__(self, app: ASGIApp, *, handles_lifespan: bool = False) -> None:
        self.app = app
        self.handles_lifespan = handles_lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        from . import lifecycle

        lifecycle.lifespan_drain = True
        if self.handles_lifespan:
            await self.app(scope, receive, self._draining_send(send))
        else:
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _drain()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _draining_send(self, send: Send) -> Send:
        async def draining_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await _drain()
            await send(message)

        return draining_send


async def _drain() -> None:
    from .runtime import shutdown

    # In a thread: the drain waits (up to AFTER_RESPONSE_DRAIN_TIMEOUT) and the event loop must
    # keep serving the connections that are still finishing.
    await asyncio.to_thread(shutdown)
