"""Property: whatever the interleaving of defer, cancel, commit, rollback (also found by the
garbage collector while the transition lock is held), flush, drain, shutdown, a settings change
that replaces the pool and a fork, the counters add up at every step and no accepted call is
lost or run twice."""

from __future__ import annotations

import os
import threading
import warnings
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from after_response import deferred, transactions
from after_response.deferred import CallQueue, DeferredCall, State
from after_response.pool import Stats, WorkerPool

from . import recorder

WAIT = 10.0
TERMINAL = {State.DONE, State.FAILED, State.CANCELLED, State.DISCARDED, State.DROPPED}


class Queue(CallQueue):
    def __init__(self, machine: Deferring) -> None:
        super().__init__()
        self.machine = machine

    def hand_off(self, calls: list[DeferredCall]) -> None:
        self.machine.pool.accept(calls)  # the pool of the moment, as runtime.hand_off does


class Deferring(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ran: Counter[int] = Counter()
        self.lock = threading.Lock()
        self.pools: list[WorkerPool] = []
        self.pool = self.new_pool()
        self.queues: list[Queue] = []
        self.calls: list[DeferredCall] = []
        self.gated: list[DeferredCall] = []  # calls with a transaction still open

    def new_pool(self) -> WorkerPool:
        pool = WorkerPool(
            workers=2,
            max_pending=8,
            when_full="drop",
            block_timeout=0,
            run_call=self.run,
        )
        self.pools.append(pool)
        return pool

    def stats(self) -> Stats:
        totals = Counter[str]()
        for pool in self.pools:
            stats = pool.stats()
            for name in ("accepted", "waiting", "backlog", "running", "settled"):
                totals[name] += getattr(stats, name)
            totals["ran"] += stats.done + stats.failed
        return Stats(
            accepted=totals["accepted"],
            waiting=totals["waiting"],
            backlog=totals["backlog"],
            running=totals["running"],
            done=totals["settled"],  # only sums are compared
        )

    def run(self, call: DeferredCall) -> bool:
        with self.lock:
            self.ran[call.args[0]] += 1
        return call.args[0] % 7 != 0  # some calls fail

    @rule()
    def new_request(self) -> None:
        self.queues.append(Queue(self))

    @precondition(lambda self: self.queues)
    @rule(data=st.data(), in_transaction=st.booleans())
    def defer(self, data: st.DataObject, in_transaction: bool) -> None:
        queue = data.draw(st.sampled_from(self.queues))
        call = DeferredCall(lambda: None, (len(self.calls),), {})
        if in_transaction:
            call.gates = 1
            self.gated.append(call)
        self.calls.append(call)
        queue.append(call)

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.calls)).cancel()

    @precondition(lambda self: self.gated)
    @rule(data=st.data(), commit=st.booleans())
    def end_transaction(self, data: st.DataObject, commit: bool) -> None:
        call = self.gated.pop(data.draw(st.integers(0, len(self.gated) - 1)))
        if commit:
            transactions._gate_opened(call)
        else:
            transactions._gate_dropped(call, [False], os.getpid())

    @precondition(lambda self: self.gated)
    @rule(data=st.data())
    def rollback_found_by_the_garbage_collector(self, data: st.DataObject) -> None:
        # A finalizer run while this thread holds the lock (inside stats(), say): it must not
        # wait for the lock, and the rollback must still be counted.
        call = self.gated.pop(data.draw(st.integers(0, len(self.gated) - 1)))
        with deferred.transition_lock:
            transactions._gate_dropped(call, [False], os.getpid())

    @rule(timeout=st.sampled_from([0.0, 0.01, WAIT]))
    def shutdown(self, timeout: float) -> None:
        self.pool.shutdown(timeout)

    @rule()
    def settings_change(self) -> None:
        old, self.pool = self.pool, self.new_pool()
        old.retire()

    @rule()
    def fork(self) -> None:
        """A child neither runs nor counts the parent's calls, whatever it does with them."""
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            try:
                ran, parent = sum(self.ran.values()), os.getppid()
                for call in self.gated:  # the child's copy of a transaction ends
                    transactions._gate_dropped(call, [False], parent)
                stats = self.pool.stats()  # the pool was reset in the child
                clean = stats.accepted == stats.waiting == 0 and sum(self.ran.values()) == ran
                untouched = all(call.state is not State.DISCARDED for call in self.gated)
                os.write(write_end, b"ok" if clean and untouched else repr(stats).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        child = recorder.child_answer(pid, read_end)
        assert child == "ok"

    @precondition(lambda self: self.queues)
    @rule(data=st.data())
    def flush(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.queues)).flush()

    @rule()
    def drain(self) -> None:
        for pool in self.pools:
            assert pool.drain(WAIT)

    @invariant()
    def counters_add_up(self) -> None:
        stats = self.stats()
        assert stats.accepted == (stats.waiting + stats.backlog + stats.running + stats.done), stats

    @invariant()
    def each_call_runs_at_most_once(self) -> None:
        with self.lock:
            assert all(times <= 1 for times in self.ran.values()), self.ran

    def teardown(self) -> None:
        for queue in self.queues:
            queue.flush()
        for call in self.gated:
            transactions._gate_opened(call)
        for pool in self.pools:
            assert pool.drain(WAIT)
        stats = self.stats()
        assert stats.accepted == len(self.calls)
        assert stats.waiting == stats.backlog == stats.running == 0
        assert stats.accepted == stats.done  # settled
        ran = 0
        for number, call in enumerate(self.calls):
            assert call.state in TERMINAL, call
            expected = 1 if call.state in (State.DONE, State.FAILED) else 0
            assert self.ran[number] == expected, (call, self.ran[number])
            ran += expected
        assert sum(pool.stats().done + pool.stats().failed for pool in self.pools) == ran
        for pool in self.pools:
            pool.shutdown(WAIT)


TestDeferring = Deferring.TestCase
TestDeferring.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
