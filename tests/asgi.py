"""Drive Django's real ASGIHandler in-process, with a scripted client (for disconnects)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.handlers.asgi import ASGIHandler


async def request(
    path: str,
    *,
    disconnect: Callable[[], Awaitable[None]] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    app: Any = None,
    root_path: str = "",
) -> list[dict[str, Any]]:
    """Send one GET; if ``disconnect`` is given, the client disconnects once it returns."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": root_path,
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"", "more_body": False}
        if disconnect is None:
            await asyncio.Event().wait()  # a client that stays connected; cancelled by Django
        else:
            await disconnect()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await (app or ASGIHandler())(scope, receive, send)
    return sent
