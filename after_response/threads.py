"""Drop-in ``threading.Thread`` and ``concurrent.futures.ThreadPoolExecutor`` that run their work
like a Django request, in the thread that does it.

Around each unit of work (a thread's ``run()``, one pool job) the worker thread closes stale
connections before and after and rolls back a transaction the work left open
(``db.like_a_request()``), and closes all its connections when it ends
(``db.close_thread_connections()``). Nothing happens in the calling thread: its connection may
hold an open transaction, which closing it would break.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import logging
import os
import queue
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, ParamSpec, TypeVar

from . import context, db
from .context import CallContext
from .deferred import callable_name

__all__ = ["BrokenThreadPool", "Thread", "ThreadPoolExecutor"]

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("after_response")
LABEL = "thread"  # CallContext's label: there is no request to name

if sys.version_info >= (3, 13):
    _cpu_count = os.process_cpu_count
else:
    _cpu_count = os.cpu_count


# -- Thread -------------------------------------------------------------------------------

_HYGIENIC = "_after_response_hygienic"  # marks a run() already wrapped
_running = threading.local()  # .active: a wrapped run() is running in this thread


def _like_a_request(run: Callable[[Thread], None]) -> Callable[[Thread], None]:
    @functools.wraps(run)
    def wrapper(thread: Thread) -> None:
        if threading.current_thread() is not thread or getattr(_running, "active", False):
            # run() called directly (it runs in the caller then, like threading's), or through
            # super() from a subclass's run(), which is wrapped already.
            run(thread)
            return
        call_context = thread._after_response_context or context.current(LABEL)
        _running.active = True
        try:
            with db.like_a_request(f"Thread {thread.name!r}"):
                call_context.run(functools.partial(run, thread))
        finally:
            _running.active = False
            db.close_thread_connections()

    setattr(wrapper, _HYGIENIC, True)
    return wrapper


class Thread(threading.Thread):
    """``threading.Thread`` whose ``run()`` runs like a Django request, in the new thread.

    A subclass's own ``run()`` is wrapped too. The language, time zone, script prefix and
    urlconf active where ``start()`` is called are active in ``run()``.
    """

    _after_response_context: CallContext | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls.run, _HYGIENIC, False):  # its own run(), or a mixin's
            cls.run = _like_a_request(cls.run)  # type: ignore[method-assign]

    def start(self) -> None:
        self._after_response_context = context.current(LABEL)
        super().start()

    @_like_a_request
    def run(self) -> None:
        super().run()


# -- ThreadPoolExecutor -------------------------------------------------------------------


class _Future(futures.Future[T]):
    """Logs its exception when garbage-collected if nobody called result() or exception()."""

    _retrieved = False
    _name = ""  # of the callable, set when it raised

    def result(self, timeout: float | None = None) -> T:
        try:
            return super().result(timeout)
        finally:
            if self.done():
                self._retrieved = True

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            return super().exception(timeout)
        finally:
            if self.done():
                self._retrieved = True

    def __del__(self) -> None:
        if self._retrieved or not self.done() or self.cancelled():
            return
        exc = super().exception(0)
        if exc is not None:
            logger.error(
                "%s raised in a ThreadPoolExecutor and nobody retrieved the exception "
                "from its Future",
                self._name,
                exc_info=exc,
            )


class _Job:
    __slots__ = ("args", "call_context", "fn", "future", "kwargs")

    def __init__(
        self,
        future: _Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        call_context: CallContext,
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.call_context = call_context

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            with db.like_a_request(self.fn):
                result = self.call_context.run(
                    functools.partial(self.fn, *self.args, **self.kwargs)
                )
        except BaseException as exc:
            self.future._name = callable_name(self.fn)
            self.future.set_exception(exc)
            del self  # the traceback keeps this frame: no reference cycle through the Future
        else:
            self.future.set_result(result)


_Jobs = queue.SimpleQueue[_Job | None]  # None wakes a worker to check whether to end


def _work(
    executor_ref: weakref.ref[ThreadPoolExecutor],
    jobs: _Jobs,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> None:
    try:
        if initializer is not None:
            try:
                with db.like_a_request(initializer):
                    initializer(*initargs)
            except BaseException:
                # What the stdlib logs, where it logs it.
                logging.getLogger("concurrent.futures").critical(
                    "Exception in initializer:", exc_info=True
                )
                executor = executor_ref()
                if executor is not None:
                    executor._break()
                return
        while True:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                executor = executor_ref()
                if executor is not None:
                    executor._idle.release()
                del executor  # only a weak reference while waiting: it may be collected
                job = jobs.get()
            if job is not None:
                job.run()
                del job  # its arguments and result go now, not when the next job comes
                continue
            executor = executor_ref()
            if _exiting or executor is None or executor._shutdown:
                if executor is not None:
                    executor._shutdown = True
                jobs.put(None)  # for the next worker
                return
            del executor
    finally:
        db.close_thread_connections()


def _drain(jobs: _Jobs) -> Iterator[_Job]:
    while True:
        try:
            job = jobs.get_nowait()
        except queue.Empty:
            return
        if job is not None:
            yield job


_names = itertools.count()  # default thread name prefixes, like the stdlib's


class ThreadPoolExecutor(futures.ThreadPoolExecutor):
    """``concurrent.futures.ThreadPoolExecutor`` whose jobs run like Django requests.

    A subclass, so that ``isinstance`` checks accept it (asyncio's ``set_default_executor``),
    with its own worker loop: the stdlib's has no public hook where a worker thread ends, which
    is where its connections must be closed. Its workers are daemon threads, drained at
    interpreter exit by ``atexit`` (the stdlib uses a private hook of ``threading``).

    An exception that nobody retrieved (``result()`` or ``exception()`` on its Future) is
    logged on the ``after_response`` logger when the Future is garbage-collected.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        # No super().__init__(): it would set up the stdlib's workers, which are not used.
        if max_workers is None:
            max_workers = min(32, (_cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or f"ThreadPoolExecutor-{next(_names)}"
        self._init = initializer
        self._init_args = initargs
        self._shutdown = False
        self._broken_reason = ""
        self._start()
        _executors.add(self)

    def _start(self) -> None:
        # At construction, and in a child process after a fork: the threads did not survive it
        # and the jobs queued belong to the parent.
        self._pid = os.getpid()
        self._lock = threading.Lock()  # guards _shutdown, _broken_reason, _workers
        self._jobs: _Jobs = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # workers waiting for a job
        self._workers: set[threading.Thread] = set()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> futures.Future[T]:
        if self._pid != os.getpid():
            self._start()  # a fork that ran no at-fork hook (uWSGI without py-call-osafterfork)
        call_context = context.current(LABEL)
        with self._lock, _exit_lock:
            if self._broken_reason:
                raise BrokenThreadPool(self._broken_reason)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _exiting:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            future: _Future[T] = _Future()
            self._jobs.put(_Job(future, fn, args, kwargs, call_context))
            self._add_worker()
            return future

    submit.__doc__ = futures.Executor.submit.__doc__

    def _add_worker(self) -> None:
        # Called with self._lock and _exit_lock held.
        if self._idle.acquire(blocking=False) or len(self._workers) >= self._max_workers:
            return
        jobs = self._jobs

        def wake_workers(_: object) -> None:  # the executor was garbage-collected
            jobs.put(None)

        thread = threading.Thread(
            name=f"{self._thread_name_prefix}_{len(self._workers)}",
            target=_work,
            args=(weakref.ref(self, wake_workers), jobs, self._init, self._init_args),
            daemon=True,
        )
        thread.start()
        self._workers.add(thread)
        _queues[thread] = jobs

    def _break(self) -> None:
        with self._lock:
            self._broken_reason = (
                "A thread initializer failed, the thread pool is not usable anymore"
            )
            for job in _drain(self._jobs):
                job.future.set_exception(BrokenThreadPool(self._broken_reason))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                for job in _drain(self._jobs):
                    job.future.cancel()
            self._jobs.put(None)
        if wait:
            for thread in self._workers:
                thread.join()

    shutdown.__doc__ = futures.Executor.shutdown.__doc__


_exiting = False  # guarded by _exit_lock
_exit_lock = threading.Lock()
_queues: weakref.WeakKeyDictionary[threading.Thread, _Jobs] = weakref.WeakKeyDictionary()
_executors: weakref.WeakSet[ThreadPoolExecutor] = weakref.WeakSet()


@atexit.register
def _drain_at_exit() -> None:
    """Let the workers finish what was submitted, as the stdlib's do at interpreter exit."""
    global _exiting
    with _exit_lock:
        _exiting = True
    workers = list(_queues.items())
    for _, jobs in workers:
        jobs.put(None)
    for thread, _ in workers:
        thread.join()


def _after_fork_in_child() -> None:
    global _exit_lock
    _exit_lock = threading.Lock()  # another thread may have held it at the fork
    _queues.clear()
    for executor in list(_executors):
        executor._start()


os.register_at_fork(after_in_child=_after_fork_in_child)
