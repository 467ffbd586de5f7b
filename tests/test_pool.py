"""The worker pool on its own: plain Python, no Django request, no database."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from after_response.deferred import CallQueue, DeferredCall, State
from after_response.pool import InlinePool, WorkerPool

WAIT = 10.0


def run(call: DeferredCall) -> bool:
    try:
        call.fn(*call.args, **call.kwargs)
    except Exception:
        logging.getLogger("after_response").exception("failed")
        return False
    return True


@pytest.fixture
def make_pool() -> Iterator[Callable[..., WorkerPool]]:
    pools: list[WorkerPool] = []

    def make(**options: Any) -> WorkerPool:
        settings: dict[str, Any] = {
            "workers": 2,
            "max_pending": 100,
            "when_full": "block",
            "block_timeout": 5.0,
            "run_call": run,
        }
        settings.update(options)
        pool = WorkerPool(**settings)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        assert pool.shutdown(WAIT)


def call(fn: Callable[..., object], *args: Any, **kwargs: Any) -> DeferredCall:
    return DeferredCall(fn, args, kwargs)


def test_threads_start_lazily_and_run_a_batch_in_order(make_pool):
    pool = make_pool(workers=3)
    assert pool.stats().workers == 0  # nothing started before the first call
    seen: list[int] = []
    pool.accept([call(seen.append, i) for i in range(50)])
    assert pool.drain(WAIT)
    assert seen == list(range(50))  # one request's calls run in order, on one worker
    stats = pool.stats()
    assert stats.workers == 3
    assert (stats.accepted, stats.done, stats.backlog, stats.running) == (50, 50, 0, 0)


def test_batches_run_concurrently_on_several_workers(make_pool):
    pool = make_pool(workers=2)
    both_running = threading.Barrier(2, timeout=WAIT)
    pool.accept([call(both_running.wait)])
    pool.accept([call(both_running.wait)])  # would time out the barrier on a single worker
    assert pool.drain(WAIT)
    assert pool.stats().done == 2


def test_a_failing_call_is_logged_and_the_rest_still_run(make_pool, caplog):
    pool = make_pool(workers=1)
    seen: list[str] = []

    def boom() -> None:
        raise ValueError("boom")

    pool.accept([call(seen.append, "a"), call(boom), call(seen.append, "b")])
    assert pool.drain(WAIT)
    assert seen == ["a", "b"]
    assert pool.stats().failed == 1 and pool.stats().done == 2
    assert "ValueError: boom" in caplog.text


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_a_base_exception_does_not_end_the_worker(make_pool, caplog, exc):
    pool = make_pool(workers=1)

    def raise_it() -> None:
        raise exc()

    after: list[str] = []
    pool.accept([call(raise_it)])
    pool.accept([call(after.append, "still serving")])
    assert pool.drain(WAIT)
    assert after == ["still serving"]
    stats = pool.stats()
    assert stats.workers == 1 and stats.failed == 1 and stats.done == 1
    assert "BaseException" in caplog.text


def test_cancel_before_it_starts(make_pool):
    pool = make_pool(workers=1)
    gate = threading.Event()
    seen: list[str] = []
    pool.accept([call(gate.wait, WAIT)])
    queued = call(seen.append, "cancelled")
    kept = call(seen.append, "kept")
    pool.accept([queued, kept])
    assert queued.state is State.QUEUED
    assert queued.cancel()
    assert not queued.cancel() or queued.cancelled()
    gate.set()
    assert pool.drain(WAIT)
    assert seen == ["kept"]
    assert not kept.cancel()  # too late: it ran
    stats = pool.stats()
    assert (stats.accepted, stats.done, stats.cancelled) == (3, 2, 1)


def test_drop_policy_counts_every_call(make_pool, caplog):
    pool = make_pool(workers=1, max_pending=3, when_full="drop")
    gate = threading.Event()
    pool.accept([call(gate.wait, WAIT)])
    # The first batch is running; now fill the backlog and overflow it.
    for _ in range(10):
        pool.accept([call(lambda: None), call(lambda: None)])
    gate.set()
    assert pool.drain(WAIT)
    stats = pool.stats()
    assert stats.accepted == 21
    assert stats.done + stats.dropped == stats.accepted
    assert stats.dropped > 0
    assert "backlog is full" in caplog.text


def test_block_policy_waits_for_room_then_runs_everything(make_pool):
    pool = make_pool(workers=1, max_pending=2, when_full="block", block_timeout=WAIT)
    seen: list[int] = []
    peak = [0]

    def work(i: int) -> None:
        stats = pool.stats()  # sampled while producers wait for room: it must add up
        assert stats.accepted == stats.waiting + stats.backlog + stats.running + stats.settled
        peak[0] = max(peak[0], stats.backlog)
        seen.append(i)

    producers = [
        threading.Thread(target=lambda i=i: pool.accept([call(work, i)])) for i in range(30)
    ]
    for t in producers:
        t.start()
    for t in producers:
        t.join(WAIT)
    assert pool.drain(WAIT)
    assert sorted(seen) == list(range(30))
    assert peak[0] <= 2
    assert pool.stats().dropped == 0


def test_block_policy_drops_after_its_bounded_wait(make_pool, caplog):
    pool = make_pool(workers=1, max_pending=1, when_full="block", block_timeout=0.05)
    gate = threading.Event()
    pool.accept([call(gate.wait, WAIT)])
    pool.accept([call(lambda: None)])  # fills the backlog
    pool.accept([call(lambda: None)])  # waits 50 ms for room, then is dropped
    gate.set()
    assert pool.drain(WAIT)
    assert pool.stats().dropped == 1
    assert "backlog is full" in caplog.text


def test_a_call_that_defers_into_a_full_pool_does_not_deadlock(make_pool):
    pool = make_pool(workers=1, max_pending=1, when_full="block", block_timeout=WAIT)
    done = threading.Event()

    def defers_again() -> None:
        # The backlog is full and the only worker is us: waiting would never end.
        pool.accept([call(lambda: None)])
        pool.accept([call(lambda: None)])
        done.set()

    pool.accept([call(defers_again)])
    assert done.wait(WAIT)
    assert pool.drain(WAIT)
    stats = pool.stats()
    assert stats.accepted == stats.done + stats.dropped == 3


def test_drain_from_a_worker_thread_is_an_error(make_pool):
    pool = make_pool(workers=1)
    errors: list[BaseException] = []

    def drains() -> None:
        try:
            pool.drain(1)
        except RuntimeError as exc:
            errors.append(exc)

    pool.accept([call(drains)])
    assert pool.drain(WAIT)
    assert errors and "would wait for itself" in str(errors[0])


def test_drain_times_out(make_pool):
    pool = make_pool(workers=1)
    gate = threading.Event()
    pool.accept([call(gate.wait, WAIT)])
    assert pool.drain(0.01) is False
    gate.set()
    assert pool.drain(WAIT)


def test_shutdown_stops_accepting_and_reports_what_was_left(make_pool, caplog):
    pool = make_pool(workers=1)
    gate = threading.Event()

    def stuck() -> None:
        gate.wait(WAIT)

    pool.accept([call(stuck)])
    pool.accept([call(lambda: None)])
    assert pool.shutdown(0.05) is False
    assert "did not finish within 0.1 s" in caplog.text
    assert "stuck" in caplog.text
    pool.accept([call(lambda: None)])
    assert "shutting down" in caplog.text
    gate.set()


def test_inline_pool_runs_in_the_calling_thread():
    pool = InlinePool(workers=1, max_pending=1, when_full="drop", block_timeout=0, run_call=run)
    threads: list[str] = []
    pool.accept([call(lambda: threads.append(threading.current_thread().name))] * 3)
    assert threads == [threading.current_thread().name] * 3
    assert pool.stats().done == 3


def test_queue_hands_off_once_and_late_calls_go_alone():
    handed: list[list[str]] = []

    class Queue(CallQueue):
        def hand_off(self, calls: list[DeferredCall]) -> None:
            handed.append([c.args[0] for c in calls])

    queue = Queue()
    queue.append(call(print, "a"))
    cancelled = call(print, "x")
    queue.append(cancelled)
    queue.append(call(print, "b"))
    assert queue.cancel(cancelled)
    assert len(queue) == 2 and [c.args[0] for c in queue] == ["a", "b"]
    queue.flush()
    queue.flush()
    assert queue.sent and len(queue) == 0 and not queue
    queue.append(call(print, "late"))
    assert handed == [["a", "x", "b"], ["late"]]


def test_work_deferred_after_a_fork_runs_in_the_child(make_pool, tmp_path):
    pool = make_pool(workers=2)
    pool.accept([call(lambda: None)])
    assert pool.drain(WAIT) and pool.stats().workers == 2  # threads run in the parent
    marker = tmp_path / "child"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            pool.accept([call(marker.write_text, str(os.getpid()))])
            code = 0 if pool.drain(WAIT) and marker.exists() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert marker.read_text() == str(pid)


def test_pid_check_recovers_when_no_fork_hook_ran(make_pool):
    # uWSGI without --py-call-osafterfork forks without running Python's at-fork hooks: the
    # pool then only notices through the pid check on accept().
    pool = make_pool(workers=1)
    pool.accept([call(lambda: None)])
    assert pool.drain(WAIT)
    pool._pid = -1  # what a forked child without hooks would see
    seen: list[str] = []
    pool.accept([call(seen.append, "after fork")])
    assert pool.drain(WAIT)
    assert seen == ["after fork"]
    assert pool.stats().accepted == 1  # the counters restarted with the new process


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="when_full"):
        WorkerPool(workers=1, max_pending=1, when_full="wait", block_timeout=0, run_call=run)


def test_an_event_loop_thread_never_waits_for_room(make_pool, caplog):
    import asyncio

    pool = make_pool(workers=1, max_pending=1, when_full="block", block_timeout=WAIT)
    gate = threading.Event()
    pool.accept([call(gate.wait, WAIT)])
    pool.accept([call(lambda: None)])  # the backlog is now full

    async def from_a_coroutine() -> None:
        pool.accept([call(lambda: None)])  # must return at once, not block the loop

    asyncio.run(asyncio.wait_for(from_a_coroutine(), WAIT))
    gate.set()
    assert pool.drain(WAIT)
    assert pool.stats().dropped == 1


def test_no_thread_can_be_started(make_pool, monkeypatch, caplog):
    pool = make_pool(workers=2)

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    pool.accept([call(lambda: None)])
    monkeypatch.undo()
    stats = pool.stats()
    assert stats.dropped == 1 and stats.workers == 0
    assert stats.problems == ("cannot start worker threads: can't start new thread",)
    assert "no worker thread could be started" in caplog.text


def test_a_slow_call_is_reported_and_the_rest_keep_serving(make_pool, caplog):
    pool = make_pool(workers=2, slow_call=0.05)
    stuck = threading.Event()
    warned = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "is it stuck" in record.getMessage():
                warned.set()

    handler = Watch()
    logging.getLogger("after_response").addHandler(handler)
    try:
        pool.accept([call(stuck.wait, WAIT)])
        assert warned.wait(WAIT)
        assert pool.stats().slow == 1
        other_done = threading.Event()
        pool.accept([call(other_done.set)])
        assert other_done.wait(WAIT)  # the other worker still serves
        assert pool.drain(0.01) is False  # the stuck call keeps the pool busy
        assert "threading.Event.wait (request: no request) has been running for" in caplog.text
    finally:
        logging.getLogger("after_response").removeHandler(handler)
        stuck.set()
    assert pool.drain(WAIT)
    assert pool.stats().slow == 0


def test_calls_reported_as_never_started_never_start(make_pool, caplog):
    pool = make_pool(workers=1)
    release = threading.Event()
    ran: list[str] = []
    pool.accept([call(release.wait, WAIT), call(ran.append, "second")])
    deadline = time.monotonic() + WAIT
    while pool.stats().running == 0:  # the first call has started: a bounded wait
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert pool.shutdown(0.05) is False
    assert "1 call(s) still running" in caplog.text and "1 never started" in caplog.text
    release.set()
    assert pool.drain(WAIT)
    assert ran == []
    stats = pool.stats()
    assert stats.dropped == 1 and stats.accepted == stats.settled
