"""Property: whatever the interleaving of defer, cancel, commit, rollback, flush and drain, the
counters add up and no accepted call is lost or run twice."""

from __future__ import annotations

import os
import threading
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from after_response import transactions
from after_response.deferred import CallQueue, DeferredCall, State
from after_response.pool import WorkerPool

WAIT = 10.0
TERMINAL = {State.DONE, State.FAILED, State.CANCELLED, State.DISCARDED, State.DROPPED}


class Queue(CallQueue):
    def __init__(self, pool: WorkerPool) -> None:
        super().__init__()
        self.pool = pool

    def hand_off(self, calls: list[DeferredCall]) -> None:
        self.pool.accept(calls)


class Deferring(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ran: Counter[int] = Counter()
        self.lock = threading.Lock()
        self.pool = WorkerPool(
            workers=2,
            max_pending=8,
            when_full="drop",
            block_timeout=0,
            run_call=self.run,
        )
        self.queues: list[Queue] = []
        self.calls: list[DeferredCall] = []
        self.gated: list[DeferredCall] = []  # calls with a transaction still open

    def run(self, call: DeferredCall) -> bool:
        with self.lock:
            self.ran[call.args[0]] += 1
        return call.args[0] % 7 != 0  # some calls fail

    @rule()
    def new_request(self) -> None:
        self.queues.append(Queue(self.pool))

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

    @precondition(lambda self: self.queues)
    @rule(data=st.data())
    def flush(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.queues)).flush()

    @rule()
    def drain(self) -> None:
        assert self.pool.drain(WAIT)

    @invariant()
    def counters_add_up(self) -> None:
        stats = self.pool.stats()
        assert stats.accepted == (stats.waiting + stats.backlog + stats.running + stats.settled), (
            stats
        )

    def teardown(self) -> None:
        for queue in self.queues:
            queue.flush()
        for call in self.gated:
            transactions._gate_opened(call)
        assert self.pool.drain(WAIT)
        stats = self.pool.stats()
        assert stats.accepted == len(self.calls)
        assert stats.waiting == stats.backlog == stats.running == 0
        assert stats.accepted == stats.settled
        for number, call in enumerate(self.calls):
            assert call.state in TERMINAL, call
            expected = 1 if call.state in (State.DONE, State.FAILED) else 0
            assert self.ran[number] == expected, (call, self.ran[number])
        assert stats.done + stats.failed == sum(self.ran.values())
        self.pool.shutdown(WAIT)


TestDeferring = Deferring.TestCase
TestDeferring.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
