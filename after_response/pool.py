"""The managed worker pool: lazy start, fork-safe, bounded, drains at exit.

Plain Python: the Django layer passes in how to run one call and what to do when a worker
thread ends; this module never reads settings.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from . import deferred
from .deferred import DeferredCall, State

logger = logging.getLogger("after_response")

BLOCK = "block"
DROP = "drop"
WHEN_FULL_POLICIES = (BLOCK, DROP)
MAX_NAMES_LOGGED = 20

_worker = threading.local()  # .pool is set in the pool's own worker threads


@dataclasses.dataclass(frozen=True)
class Stats:
    """Counters of this process's calls (each server worker process has its own).

    Every call handed off is counted once in ``accepted`` and, at any moment, in exactly one
    of the other counters, so ``accepted == waiting + backlog + running + done + failed +
    cancelled + discarded + dropped + skipped``. A call is accepted when its request's queue is
    handed off (the response was sent), or at once when deferred outside a request.
    """

    accepted: int = 0
    waiting: int = 0  # for a transaction to commit
    backlog: int = 0  # queued for a worker
    running: int = 0
    slow: int = 0  # of the running calls, those past AFTER_RESPONSE_SLOW_CALL (stuck?)
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    discarded: int = 0  # their transaction rolled back
    dropped: int = 0  # backlog full, or refused while shutting down
    skipped: int = 0  # only_on_success, and the response was an error (or none was sent)
    handoff_errors: int = 0  # hand-offs that failed inside the library (a bug: see the log)
    rescued: int = 0  # request queues handed off by the garbage collector (response never closed)
    workers: int = 0  # worker threads alive
    max_workers: int = 0
    max_pending: int = 0
    pid: int = 0
    mode: str = "threads"  # or "gevent", "inline (uWSGI without threads)", "immediate"
    problems: tuple[str, ...] = ()  # run-time configuration problems, also logged once

    @property
    def settled(self) -> int:
        return (
            self.done + self.failed + self.cancelled + self.discarded + self.dropped + self.skipped
        )


class WorkerPool:
    """A fixed number of daemon worker threads fed batches of calls.

    A batch (the calls of one request) runs in order on one worker. ``max_pending`` bounds the
    calls queued and not yet started; when it is reached ``when_full`` says whether to wait up
    to ``block_timeout`` seconds for room, or to drop the batch at once. Threads of this pool
    and threads running an event loop never wait: for them a full backlog drops the batch.
    """

    def __init__(
        self,
        *,
        workers: int,
        max_pending: int,
        when_full: str,
        block_timeout: float,
        run_call: Callable[[DeferredCall], bool],
        on_worker_exit: Callable[[], None] = lambda: None,
        thread_name_prefix: str = "after_response",
        mode: str = "threads",
        slow_call: float | None = None,
    ) -> None:
        if when_full not in WHEN_FULL_POLICIES:
            raise ValueError(f"when_full must be one of {WHEN_FULL_POLICIES}, got {when_full!r}")
        self.max_workers = workers
        self.max_pending = max_pending
        self.when_full = when_full
        self.block_timeout = block_timeout
        self._run_call = run_call
        self._on_worker_exit = on_worker_exit
        self._prefix = thread_name_prefix
        self.mode = mode
        self.slow_call = slow_call
        self._lock = deferred.transition_lock
        self._room = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._problems: dict[str, str] = {}
        self._reset()
        _pools.add(self)

    def _reset(self) -> None:
        # Everything below is guarded by self._lock, except _queue (thread-safe itself).
        self._pid = os.getpid()
        self._queue: queue.SimpleQueue[list[DeferredCall] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._shutting_down = False
        self._deadline_passed = False  # shutdown gave up: calls not started never will be
        self._room_waiters = 0
        self._idle_waiters = 0
        self._running_calls: dict[DeferredCall, float] = {}  # call -> time.monotonic() start
        self._slow_warned: set[DeferredCall] = set()
        self._monitor: threading.Thread | None = None
        self._monitor_stop = threading.Event()
        # The rest of the batch each worker is running (a worker and a shutdown that gives up
        # each take calls from it with popleft(), so each call goes to one of them only).
        self._in_hand: dict[int, collections.deque[DeferredCall]] = {}
        self._shutdown_done: threading.Event | None = None
        self._forward: Callable[[list[DeferredCall]], None] | None = None  # set when retired
        self._shutdown_result = True
        self._counts = dict.fromkeys(
            (
                "accepted",
                "waiting",
                "backlog",
                "done",
                "failed",
                "cancelled",
                "discarded",
                "dropped",
                "skipped",
                "handoff_errors",
                "rescued",
            ),
            0,
        )

    def _after_fork_in_child(self) -> None:
        # The threads did not survive the fork and the backlog belongs to the parent.
        self._room = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._reset()

    # -- accepting work -----------------------------------------------------------------

    def accept(self, calls: Iterable[DeferredCall]) -> None:
        """Take the calls of one request (or one call): queue the ready ones as one batch.

        Calls still waiting for a commit are kept aside until ``settle()`` is called for them.
        """
        if self._pid != os.getpid():
            # A fork that ran no at-fork hook (uWSGI without --py-call-osafterfork).
            self._after_fork_in_child()
        ready: list[DeferredCall] = []
        with self._lock:
            counts = self._counts
            for call in calls:
                state = call.state
                if state is State.CANCELLED:
                    counts["cancelled"] += 1
                elif state is State.DISCARDED:
                    counts["discarded"] += 1
                elif state is State.SKIPPED:
                    counts["skipped"] += 1
                elif call.gates:
                    call.state = State.WAITING
                    call.on_settled = self.settle
                    counts["waiting"] += 1
                else:
                    call.state = State.QUEUED
                    ready.append(call)
                    continue
                counts["accepted"] += 1
            if ready:
                refused = self._admit(ready, was_waiting=False)
            elif self._idle_waiters:
                self._notify_if_idle()  # drain(wait_for_responses=True) waits for this
        if ready:
            self._hand_over(ready, refused)

    def settle(self, call: DeferredCall) -> None:
        """A waiting call's transactions settled: queue it, or count it as discarded.

        In a retired pool it leaves this pool's counters for the pool that replaced it.
        """
        with self._lock:
            if call.state in (State.CANCELLED, State.DISCARDED):
                self._counts["waiting"] -= 1
                self._counts[call.state.value] += 1
                return
            forward = self._forward
            if forward is None:
                call.state = State.QUEUED
                refused = self._admit([call], was_waiting=True)
            else:
                self._counts["waiting"] -= 1
                self._counts["accepted"] -= 1
        if forward is not None:
            forward([call])
            return
        self._hand_over([call], refused)

    def count_handoff_error(self) -> None:
        with self._lock:
            self._counts["handoff_errors"] += 1

    def count_rescued(self) -> None:
        with self._lock:
            self._counts["rescued"] += 1

    def _admit(
        self, batch: list[DeferredCall], *, was_waiting: bool
    ) -> tuple[str, list[str]] | None:
        """Count the batch into the backlog, or as dropped: (why, names) if dropped.

        Called with self._lock held. The batch is counted in one place only once it is admitted
        or refused (a wait for room releases the lock), so the counters add up at every moment.
        """
        reason = self._refusal(len(batch))
        counts = self._counts
        if was_waiting:
            counts["waiting"] -= len(batch)
        else:
            counts["accepted"] += len(batch)
        if reason is None:
            counts["backlog"] += len(batch)
            return None
        return reason, self._mark_dropped(batch)

    def _refusal(self, size: int) -> str | None:
        # Called with self._lock held. Why a batch of this size cannot be queued, or None.
        if self._shutting_down:
            return "after_response is shutting down"
        if size > self.max_pending:
            return (
                f"one request deferred {size} calls, more than the backlog holds "
                f"(AFTER_RESPONSE_MAX_PENDING = {self.max_pending})"
            )
        counts = self._counts
        full = counts["backlog"] and counts["backlog"] + size > self.max_pending
        if full and not self._wait_for_room(size):
            return f"the backlog is full ({self.max_pending} calls)"
        if len(self._threads) < self.max_workers and not self._start_workers():
            return f"no worker thread could be started ({self._problems['start']})"
        return None

    def _hand_over(self, batch: list[DeferredCall], refused: tuple[str, list[str]] | None) -> None:
        if refused is None:
            self._deliver(batch)
            return
        reason, dropped = refused
        if dropped:
            # Logged outside the lock: a logging handler is user code.
            _log_about(
                [call for call in batch if call.state is State.DROPPED],
                logging.ERROR,
                "Dropped %d deferred call(s) because %s: %s",
                len(dropped),
                reason,
                _names(dropped),
            )

    def _deliver(self, batch: list[DeferredCall]) -> None:
        """Give an admitted batch to the workers."""
        self._queue.put(batch)

    def _wait_for_room(self, size: int) -> bool:
        # Called with self._lock held; Condition.wait releases it while waiting.
        if self.when_full == DROP or self._must_not_block():
            return False
        deadline = time.monotonic() + self.block_timeout
        self._room_waiters += 1
        try:
            while self._counts["backlog"] and self._counts["backlog"] + size > self.max_pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._shutting_down:
                    return False
                self._room.wait(remaining)
            return True
        finally:
            self._room_waiters -= 1

    @staticmethod
    def _must_not_block() -> bool:
        if getattr(_worker, "pool", None) is not None:
            return True  # waiting for room in our own pool could deadlock it
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def _mark_dropped(self, batch: list[DeferredCall]) -> list[str]:
        # Called with self._lock held.
        dropped = []
        for call in batch:
            if call.state is State.CANCELLED:
                self._counts["cancelled"] += 1
            else:
                call.state = State.DROPPED
                self._counts["dropped"] += 1
                dropped.append(call.name)
        return dropped

    def _start_workers(self) -> bool:
        # Called with self._lock held. Threads start lazily: never at import or in ready().
        try:
            while len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work,
                    name=f"{self._prefix}-{len(self._threads) + 1}",
                    daemon=True,  # drained explicitly with a deadline, never joined unbounded
                )
                thread.start()
                self._threads.append(thread)
            if self.slow_call is not None and self._monitor is None:
                self._monitor = threading.Thread(
                    target=self._watch_for_slow_calls,
                    name=f"{self._prefix}-monitor",
                    daemon=True,
                )
                self._monitor.start()
        except RuntimeError as exc:  # "can't start new thread", e.g. at interpreter exit
            self._problems.setdefault("start", f"cannot start worker threads: {exc}")
        return bool(self._threads)

    # -- running work -------------------------------------------------------------------

    def _work(self) -> None:
        _worker.pool = self
        me = threading.get_ident()
        try:
            while True:
                batch = self._queue.get()
                if batch is None:
                    return
                todo = self._in_hand[me] = collections.deque(batch)
                while True:
                    try:
                        call = todo.popleft()
                    except IndexError:
                        break
                    self._run_one(call)
                del self._in_hand[me]
                deferred.run_later()
        finally:
            _worker.pool = None
            try:
                self._on_worker_exit()
            except Exception:
                logger.exception("after_response worker clean-up failed")

    def _run_one(self, call: DeferredCall) -> None:
        with self._lock:
            counts = self._counts
            if self._deadline_passed:  # a batch taken just as the shutdown gave up
                counts["backlog"] -= 1
                self._mark_dropped([call])
                self._notify_if_idle()
                return
            counts["backlog"] -= 1
            if self._room_waiters:
                self._room.notify()
            if call.state is State.CANCELLED:
                counts["cancelled"] += 1
                self._notify_if_idle()
                return
            call.state = State.RUNNING
            self._running_calls[call] = time.monotonic()
        ok = False
        try:
            ok = self._run_call(call)
        except BaseException:
            # The Django layer's run_call reports every failure itself; another run_call may
            # not: whatever it lets through must not end the worker thread.
            logger.exception("Deferred call %s raised a BaseException", call.name)
        with self._lock:
            del self._running_calls[call]
            if self._slow_warned:
                self._slow_warned.discard(call)
            call.state = State.DONE if ok else State.FAILED
            self._counts["done" if ok else "failed"] += 1
            self._notify_if_idle()

    def _watch_for_slow_calls(self) -> None:
        assert self.slow_call is not None
        interval = min(max(self.slow_call / 4, 0.01), 5.0)  # seconds
        while not self._monitor_stop.wait(interval):
            deferred.run_later()
            now = time.monotonic()
            with self._lock:
                slow = [
                    (call, now - started)
                    for call, started in self._running_calls.items()
                    if now - started > self.slow_call and call not in self._slow_warned
                ]
                self._slow_warned.update(call for call, _ in slow)
            for call, elapsed in slow:
                # A call cannot be stopped from outside in Python: make it visible instead.
                _log_about(
                    [call],
                    logging.WARNING,
                    "Deferred call %s (request: %s) has been running for %.1f s, more than "
                    "AFTER_RESPONSE_SLOW_CALL: is it stuck (e.g. on a socket without a timeout)?",
                    call.name,
                    getattr(call.context, "label", "no request"),
                    elapsed,
                )

    def _notify_if_idle(self) -> None:
        # Called with self._lock held.
        if self._idle_waiters and not self._counts["backlog"] and not self._running_calls:
            self._idle.notify_all()

    # -- waiting and stopping -----------------------------------------------------------

    def drain(self, timeout: float | None = None, *, wait_for_responses: bool = False) -> bool:
        """Wait until no call is queued or running; return False if ``timeout`` ran out.

        ``wait_for_responses``: also until no request queue holds calls (a response not
        closed yet).
        """
        if getattr(_worker, "pool", None) is self:
            raise RuntimeError(
                "drain() was called from one of after_response's worker threads, where it "
                "would wait for itself. Call it from a test, command or request thread."
            )
        deferred.run_later()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._idle_waiters += 1
            try:
                while (
                    self._counts["backlog"]
                    or self._running_calls
                    or (wait_for_responses and deferred.open_queues[0])
                ):
                    if self._pid != os.getpid():
                        return True  # the work belonged to the parent process
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._idle.wait(remaining)
                return True
            finally:
                self._idle_waiters -= 1

    def retire(self, forward: Callable[[list[DeferredCall]], None] | None = None) -> None:
        """Refuse new calls; let the workers finish the backlog, then end (pool replaced).

        Calls still waiting for a commit go to ``forward`` once it comes.
        """
        self._monitor_stop.set()
        with self._lock:
            self._forward = forward
            self._shutting_down = True
            threads = len(self._threads)
        for _ in range(threads):
            self._queue.put(None)

    def shutdown(self, timeout: float) -> bool:
        """Stop accepting, wait up to ``timeout`` seconds, log what was left undone.

        A second call (another exit hook, another thread) waits for the first one's outcome.
        """
        with self._lock:
            if self._pid != os.getpid():
                return True
            done = self._shutdown_done
            if done is None:
                done = self._shutdown_done = threading.Event()
                first = True
                self._shutting_down = True
                if self._room_waiters:
                    self._room.notify_all()
            else:
                first = False
        if not first:
            # Whatever the first one's outcome, this one returns whether all is done now.
            deadline = time.monotonic() + timeout
            if not done.wait(timeout):
                return False
            if self._shutdown_result:
                return True
            self._shutdown_result = self.drain(max(0.0, deadline - time.monotonic()))
            if self._shutdown_result:
                self._stop_threads(0.0)
            return self._shutdown_result
        try:
            self._shutdown_result = self._shut_down(timeout)
        finally:
            done.set()
        return self._shutdown_result

    def _stop_threads(self, timeout: float) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def _shut_down(self, timeout: float) -> bool:
        drained = self.drain(timeout)
        self._monitor_stop.set()
        if drained:
            self._stop_threads(timeout)
            return True
        stops = 0
        with self._lock:
            self._deadline_passed = True
            running = sorted(call.name for call in self._running_calls)
            # Calls never started are settled now, as dropped: they never will start.
            abandoned: list[DeferredCall] = []
            for todo in list(self._in_hand.values()):  # workers add and remove theirs unlocked
                while True:
                    try:
                        abandoned.append(todo.popleft())
                    except IndexError:
                        break
            while True:
                try:
                    batch = self._queue.get_nowait()
                except queue.Empty:
                    break
                if batch is None:
                    stops += 1
                else:
                    abandoned.extend(batch)
            self._counts["backlog"] -= len(abandoned)
            queued = self._mark_dropped(abandoned)
            self._notify_if_idle()
        for _ in range(stops):
            self._queue.put(None)
        logger.error(
            "after_response did not finish within %.1f s at shutdown: %d call(s) still "
            "running (%s), %d never started (%s)",
            timeout,
            len(running),
            _names(running),
            len(queued),
            _names(queued),
        )
        return False

    # -- reporting ----------------------------------------------------------------------

    def report_problem(self, key: str, message: str) -> None:
        """Log a run-time problem once per process and show it in stats()."""
        with self._lock:
            new = key not in self._problems
            self._problems.setdefault(key, message)
        if new:
            logger.error("after_response: %s", message)

    def stats(self) -> Stats:
        deferred.run_later()
        with self._lock:
            alive = sum(1 for t in self._threads if t.is_alive())
            return Stats(
                **self._counts,
                running=len(self._running_calls),
                slow=len(self._slow_warned),
                workers=alive,
                max_workers=self.max_workers,
                max_pending=self.max_pending,
                pid=self._pid,
                mode=self.mode,
                problems=tuple(self._problems.values()),
            )

    @property
    def is_worker_thread(self) -> bool:
        return getattr(_worker, "pool", None) is self


class InlinePool(WorkerPool):
    """Runs each batch at once in the thread that hands it off: no threads, no backlog."""

    def _refusal(self, size: int) -> str | None:
        return "after_response is shutting down" if self._shutting_down else None

    def _deliver(self, batch: list[DeferredCall]) -> None:
        for call in batch:
            self._run_one(call)


def _log_about(calls: list[DeferredCall], level: int, msg: str, *args: Any) -> None:
    """Log in the context the calls carried (their request's ids), with them as extras."""
    extra = {"call": calls[0] if calls else None, "calls": calls}
    log = getattr(calls[0].context, "log", None) if calls else None
    if log is None:
        logger.log(level, msg, *args, extra=extra)
    else:
        log(logger, level, msg, *args, **extra)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_LOGGED])
    if len(names) > MAX_NAMES_LOGGED:
        shown += f", and {len(names) - MAX_NAMES_LOGGED} more"
    return shown or "none"


_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _reset_pools_in_child() -> None:
    for pool in list(_pools):
        pool._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_pools_in_child)
