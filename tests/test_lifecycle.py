"""Draining at shutdown, and how the process runs work, without starting a server."""

from __future__ import annotations

import asyncio
import threading
import time
import types
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings

import after_response
from after_response import lifecycle, runtime
from after_response.asgi import DrainOnShutdown, get_asgi_application

from . import recorder


@pytest.fixture
def own_pool() -> Any:
    """A pool of this test's own: shutting it down leaves the suite's pool alone."""
    with override_settings(AFTER_RESPONSE_WORKERS=2):
        yield runtime.get_pool()


def lifespan(app: Any, messages: list[str]) -> list[str]:
    """Run the lifespan protocol through ``app`` with the given events; return the replies."""
    incoming = [{"type": f"lifespan.{m}"} for m in messages]
    replies: list[str] = []

    async def receive() -> dict[str, str]:
        return incoming.pop(0)

    async def send(message: dict[str, str]) -> None:
        replies.append(message["type"])

    async_to_sync(app)({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return replies


def test_lifespan_shutdown_drains_before_it_completes(own_pool):
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.2)  # work that is still running when the server says it stops
        finished.set()

    after_response.defer(slow)
    replies = lifespan(get_asgi_application(), ["startup", "shutdown"])
    assert replies == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert finished.is_set()  # drained before shutdown.complete was sent
    assert own_pool.stats().done == 1
    after_response.defer(recorder.record, "too late")  # refused, counted, logged
    assert own_pool.stats().dropped == 1


def test_an_app_that_handles_lifespan_itself(own_pool):
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    after_response.defer(recorder.record, "queued")
    replies = lifespan(DrainOnShutdown(app, handles_lifespan=True), ["startup", "shutdown"])
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
    assert replies == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert recorder.names() == ["queued"]
    assert own_pool.stats().dropped == 0


@pytest.mark.django_db
def test_http_goes_to_django():
    from . import asgi

    async def via_wrapper() -> list[dict[str, Any]]:
        return await asgi.request("/defer-two/", app=get_asgi_application())

    sent = async_to_sync(via_wrapper)()
    assert sent[0]["status"] == 200
    assert recorder.wait_for(2) == ["first", "second"]


def test_shutdown_is_idempotent_and_bounded(own_pool, caplog):
    release = threading.Event()
    after_response.defer(release.wait, recorder.WAIT)
    assert after_response.shutdown(0.05) is False
    assert "did not finish within" in caplog.text
    # Again: bounded too, and False while the call still runs (the first said what was left).
    assert after_response.shutdown(0.05) is False
    assert caplog.text.count("did not finish within") == 1
    release.set()
    assert after_response.shutdown(recorder.WAIT) is True  # now everything has finished


def test_modes(monkeypatch):
    assert lifecycle.mode() == lifecycle.THREADS
    fake_uwsgi = types.ModuleType("uwsgi")
    fake_uwsgi.has_threads = 0  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "uwsgi", fake_uwsgi)
    assert lifecycle.mode() == lifecycle.UWSGI_WITHOUT_THREADS
    fake_uwsgi.has_threads = 1  # type: ignore[attr-defined]
    assert lifecycle.mode() == lifecycle.THREADS

    fake_monkey = types.ModuleType("gevent.monkey")
    fake_monkey.is_module_patched = lambda name: name == "threading"  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "gevent.monkey", fake_monkey)
    assert lifecycle.mode() == lifecycle.GEVENT


@pytest.mark.django_db(transaction=True)
def test_uwsgi_without_threads_runs_calls_inline_and_says_so(monkeypatch, caplog):
    fake_uwsgi = types.ModuleType("uwsgi")
    fake_uwsgi.has_threads = 0  # type: ignore[attr-defined]
    with monkeypatch.context() as patch, override_settings(AFTER_RESPONSE_WORKERS=3):
        patch.setitem(__import__("sys").modules, "uwsgi", fake_uwsgi)
        after_response.defer(recorder.record_environment, "inline")
        # Ran in this thread, at once: no worker thread would ever get to run it.
        assert recorder.calls[0][1]["thread"] == threading.current_thread().name
        stats = after_response.stats()
        assert stats.mode == lifecycle.UWSGI_WITHOUT_THREADS
        assert stats.workers == 0 and stats.done == 1
        assert "--enable-threads" in stats.problems[0]
        assert "--enable-threads" in caplog.text


def test_exit_hooks_chain_uwsgi_atexit(monkeypatch):
    calls: list[str] = []
    fake_uwsgi = types.ModuleType("uwsgi")
    fake_uwsgi.atexit = lambda: calls.append("previous")  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "uwsgi", fake_uwsgi)
    registered: list[object] = []
    monkeypatch.setattr("atexit.register", registered.append)
    monkeypatch.setattr("threading._register_atexit", registered.append)
    lifecycle.install_exit_hooks(lambda: calls.append("drain"))
    assert len(registered) == 2
    fake_uwsgi.atexit()  # type: ignore[attr-defined]
    assert calls == ["drain", "previous"]


def test_the_lifespan_wrapper_never_blocks_the_loop(own_pool):
    release = threading.Event()
    after_response.defer(release.wait, recorder.WAIT)
    ticks: list[int] = []

    async def main() -> None:
        async def tick() -> None:
            for i in range(3):
                ticks.append(i)
                await asyncio.sleep(0)
            release.set()

        incoming = [{"type": "lifespan.shutdown"}]

        async def receive() -> dict[str, str]:
            return incoming.pop(0)

        async def send(message: dict[str, str]) -> None:
            pass

        await asyncio.gather(get_asgi_application()({"type": "lifespan"}, receive, send), tick())

    asyncio.run(main())
    assert ticks == [0, 1, 2]


def test_uwsgi_without_threads_is_reported_at_start_up(monkeypatch, caplog):
    from django.apps import apps

    fake_uwsgi = types.ModuleType("uwsgi")
    fake_uwsgi.has_threads = 0  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "uwsgi", fake_uwsgi)
    apps.get_app_config("after_response").ready()
    assert "Add --enable-threads" in caplog.text
    assert (
        runtime.existing_pool() is None
        or runtime.existing_pool().mode != lifecycle.UWSGI_WITHOUT_THREADS
    )
