"""Where handed-off calls go, and how one call runs: the glue between the pool and Django."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import logging
import os
import sys
import threading
import time
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync, iscoroutinefunction, sync_to_async
from django.core.signals import setting_changed
from django.dispatch import receiver

from . import carry, conf, db, deferred, lifecycle, sentry, signals, tracing
from .context import CallContext
from .context import current as current_context
from .deferred import DeferredCall, is_task
from .pool import InlinePool, Stats, WorkerPool

logger = logging.getLogger("after_response")
_modules = sys.modules  # OpenTelemetry and Sentry are looked up here, never imported

_lock = threading.Lock()
_pool: WorkerPool | None = None  # guarded by _lock
# Pools replaced after a settings change, while they still have calls in flight. Guarded by _lock.
_retired: list[WorkerPool] = []
_exit_hooks_installed = False  # guarded by _lock
# capture_deferred() blocks in progress (testing.py), innermost last.
captures: list[WorkerPool] = []
# Failures of calls run inline in AFTER_RESPONSE_IMMEDIATE mode, for the test to raise.
inline_failures: list[tuple[DeferredCall, BaseException]] = []
# Set in the fresh context each call runs in; also seen by the thread async_to_sync runs a
# coroutine function in, and in immediate mode, where the call runs in the closing thread.
_in_call: contextvars.ContextVar[DeferredCall] = carry.own(
    contextvars.ContextVar("after_response_call")
)


def refuse_inside_a_call(what: str) -> None:
    call = _in_call.get(None)
    if call is not None:
        raise RuntimeError(
            f"{what} was called from inside the deferred call {call.name}, where it would wait "
            "for itself. Call it from a test, command or request thread."
        )


def get_pool() -> WorkerPool:
    """The process's pool, created on first use from the settings."""
    global _pool, _exit_hooks_installed
    pool = _pool
    if pool is not None:
        return pool
    with _lock:
        if _pool is not None:
            return _pool
        pool = _pool = _make_pool(conf.get())
        if not _exit_hooks_installed:
            # Worker threads are daemon threads: interpreter exit waits for none of them,
            # so the exit hooks drain them with a deadline.
            lifecycle.install_exit_hooks(shutdown)
            _exit_hooks_installed = True
    problem = lifecycle.exit_hook_problem()
    if problem is not None:
        pool.report_problem("no-exit-hook", problem)  # logs: outside _lock
    return pool


def existing_pool() -> WorkerPool | None:
    """The pool if something was deferred in this process already (a drain creates none)."""
    return _pool


def stats() -> Stats:
    pool = _pool
    if pool is not None:
        own = pool.stats()
    else:
        deferred.run_later()
        config = conf.get()
        own = Stats(
            max_workers=config.WORKERS,
            max_pending=config.MAX_PENDING,
            pid=os.getpid(),
            mode="immediate" if config.IMMEDIATE else lifecycle.mode(),
        )
    return _with_retired(own) if _retired else own


def _in_flight(stats: Stats) -> bool:
    return bool(stats.waiting or stats.backlog or stats.running)


def _with_retired(own: Stats) -> Stats:
    """Add the counters of replaced pools that still have calls in flight."""
    with _lock:
        retired = list(_retired)
    totals = dataclasses.asdict(own)
    for pool in retired:
        theirs = pool.stats()
        if not _in_flight(theirs):
            with _lock, contextlib.suppress(ValueError):
                _retired.remove(pool)
            continue
        for name in _SUMMED:
            totals[name] += getattr(theirs, name)
    return Stats(**totals)


_SUMMED = tuple(
    field.name
    for field in dataclasses.fields(Stats)
    if field.name not in ("max_workers", "max_pending", "pid", "mode", "problems")
)


def drain(timeout: float | None = None, *, wait_for_responses: bool = False) -> bool:
    refuse_inside_a_call("after_response.drain()")
    deferred.run_later()
    deadline = None if timeout is None else time.monotonic() + timeout
    with _lock:
        pools = [*_retired, *([_pool] if _pool is not None else [])]
    if not pools and wait_for_responses and deferred.open_queues[0]:
        pools = [get_pool()]  # requests deferred calls but the pool was never used
    for pool in pools:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not pool.drain(remaining, wait_for_responses=wait_for_responses):
            return False
    return True


def count_rescued() -> None:
    with contextlib.suppress(Exception):
        get_pool().count_rescued()


def _make_pool(config: conf.Config) -> WorkerPool:
    options: dict[str, Any] = {
        "workers": config.WORKERS,
        "max_pending": config.MAX_PENDING,
        "when_full": config.WHEN_FULL,
        "block_timeout": config.BLOCK_TIMEOUT,
        "on_worker_exit": db.close_thread_connections,
        "slow_call": config.SLOW_CALL,
    }
    if config.IMMEDIATE:
        return InlinePool(run_call=run_inline, mode="immediate", **options)
    mode = lifecycle.mode()
    if mode == lifecycle.UWSGI_WITHOUT_THREADS:
        # A thread started here would only run while a request executes Python, so queued
        # calls would wait for the next request, or forever. Run them when the response
        # closes instead: late for this client (uWSGI sends no Content-Length), never lost.
        pool = InlinePool(run_call=run_in_worker, mode=mode, **options)
        pool.report_problem("uwsgi-threads", lifecycle.UWSGI_WITHOUT_THREADS_MESSAGE)
        return pool
    return WorkerPool(run_call=run_in_worker, mode=mode, **options)


def hand_off(calls: list[DeferredCall]) -> None:
    """Give calls to whoever takes them now. Never raises: Django would swallow it."""
    deferred.run_later()
    if "opentelemetry.trace" in _modules and tracing.tracer() is not None:  # backlog wait
        now = time.monotonic()
        for call in calls:
            call.queued_at = now
    try:
        sink = captures[-1] if captures else get_pool()
        sink.accept(calls)
    except Exception:
        logger.exception(
            "after_response could not hand off %d deferred call(s): %s",
            len(calls),
            ", ".join(call.name for call in calls),
        )
        with contextlib.suppress(Exception):  # the settings are broken: logged above
            get_pool().count_handoff_error()


def shutdown(timeout: float | None = None) -> bool:
    """Stop accepting calls and finish the accepted ones within ``timeout`` seconds.

    Defaults to ``AFTER_RESPONSE_DRAIN_TIMEOUT``. Runs at interpreter exit; logs what was
    left undone. Returns whether everything finished.
    """
    refuse_inside_a_call("after_response.shutdown()")
    pool = _pool
    if pool is None:
        return True
    if timeout is None:
        timeout = conf.get().DRAIN_TIMEOUT
    return pool.shutdown(timeout)


@receiver(setting_changed)
def _replace_pool(*, setting: str, **kwargs: Any) -> None:
    global _pool
    if setting.startswith(conf.PREFIX):
        with _lock:
            old, _pool = _pool, None
            if old is not None:
                _retired.append(old)  # drained and counted until its last call ends
        if old is not None:
            old.retire(forward=hand_off)  # calls waiting for a commit go to the new pool


# -- running one call --------------------------------------------------------------------


def run_in_worker(call: DeferredCall) -> bool:
    db.before_work()
    try:
        return _run(call) is None
    finally:
        db.after_work(call.fn)


def run_inline(call: DeferredCall) -> bool:
    # No close_old_connections() here: in a test it would close the connection that holds
    # the TestCase transaction (Django's test client disconnects it around close() for that).
    if _in_async_client_close():
        # AsyncClient closes responses with sync_to_async(thread_sensitive=False). Run where
        # its sync views run instead (the thread-sensitive thread, which holds the test's
        # database connection): a task on the client's event loop sends us there.
        loop = SyncToAsync.threadlocal.main_event_loop
        coroutine = sync_to_async(_run, thread_sensitive=True)(call)
        error = asyncio.run_coroutine_threadsafe(coroutine, loop).result()
    else:
        error = _run(call)
    if error is not None:
        inline_failures.append((call, error))
    return error is None


def _in_async_client_close() -> bool:
    """In a sync_to_async thread, outside any ThreadSensitiveContext.

    Django's ASGIHandler runs each request in a ThreadSensitiveContext and closes its response
    in that context's thread: thread-sensitive work would be sent to this very thread, which
    is busy waiting, so there the calls run here. The test client's AsyncClient uses no such
    context. Both attributes are asgiref internals (stable since 3.3), hence the getattr.
    """
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is None or not loop.is_running():
        return False
    context = getattr(SyncToAsync, "thread_sensitive_context", None)
    return context is not None and context.get(None) is None


def _run(call: DeferredCall) -> BaseException | None:
    context = call.context
    if not isinstance(context, CallContext):  # a DeferredCall made by hand
        context = current_context("no request")
    return context.run(_run_in_context, call, context)


def _run_in_context(call: DeferredCall, context: CallContext) -> BaseException | None:
    _in_call.set(call)  # in this call's own context: nothing to reset
    if "opentelemetry.trace" not in _modules:  # the usual case, checked without a call
        return _run_reported(call, context)
    traced = tracing.tracer()
    if traced is None:
        return _run_reported(call, context)
    # The span holds everything about the call, its failure's report and log line too (a log
    # correlation sees the call's trace and span ids there).
    with tracing.CallSpan(traced, call, context.label, context.route) as span:
        error = _run_reported(call, context)
        span.settle(error)
        return error


def _run_reported(call: DeferredCall, context: CallContext) -> BaseException | None:
    # Signals without receivers (the usual case) cost a check, not a send: this runs per call.
    sender = call.fn
    if signals.call_started.receivers:
        signals.call_started.send_robust(sender=sender, call=call)
    started = time.perf_counter()
    try:
        execute(call)
    except BaseException as exc:
        # BaseException too (SystemExit, KeyboardInterrupt, CancelledError, gevent.Timeout): it
        # is the call's failure, reported like any other; the worker thread lives on.
        duration = time.perf_counter() - started
        label = context.label
        with sentry.reporting(exc, call.name, label):
            logger.exception(
                "Deferred call %s failed (request: %s)", call.name, label, extra={"call": call}
            )
        if signals.call_failed.receivers:
            signals.call_failed.send_robust(
                sender=sender, call=call, exception=exc, duration=duration
            )
        return exc
    if signals.call_finished.receivers:
        signals.call_finished.send_robust(
            sender=sender, call=call, duration=time.perf_counter() - started
        )
    return None


def execute(call: DeferredCall) -> None:
    fn = call.fn
    if not callable(fn) and is_task(fn):
        # Enqueued on its own backend now that the response is sent and the transaction
        # committed: a distributed backend's write or broker round trip is off the request path.
        fn.enqueue(*call.args, **call.kwargs)
        return
    if iscoroutinefunction(fn):
        # On this thread (async_to_sync), never as a stray task on some event loop; ORM code it
        # runs through sync_to_async comes back to this thread and its connections.
        async_to_sync(fn)(*call.args, **call.kwargs)
        return
    result = fn(*call.args, **call.kwargs)
    if result is not None and inspect.isawaitable(result):  # a partial of a coroutine function
        async_to_sync(_await)(result)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_captured_call(call: DeferredCall) -> BaseException | None:
    """Run a call captured by capture_deferred() in this thread, like immediate mode."""
    return _run(call)
