"""Deferred calls made inside ``transaction.atomic()`` wait for the commit.

A call deferred while a connection is inside an atomic block gets one *gate* per such
connection, registered with ``on_commit``. The gate opens when the transaction commits. When the
transaction (or the savepoint the call was deferred in) rolls back, Django drops the gate from
its ``run_on_commit`` list without calling it; a ``weakref.finalize`` on the gate notices and
discards the call. Gates fire in the thread that owns the connection.

The atomic blocks that ``TestCase`` opens around each test are not real transactions: they never
commit. A call deferred in a view under ``TestCase`` therefore treats the moment its own atomic
blocks have all exited as the commit (``settle_test_transactions``).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from .db import thread_connections
from .deferred import DeferredCall, State, later, transition_lock


def _real_blocks(connection: BaseDatabaseWrapper) -> bool:
    # Django marks TestCase's own blocks with _from_testcase (django/test/testcases.py).
    return any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)


def open_transactions() -> list[BaseDatabaseWrapper]:
    """The connections of this thread inside a real (not TestCase) atomic block."""
    if asyncio._get_running_loop() is None:
        wrappers = thread_connections()
    elif os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
        # The ORM in an event loop thread (notebooks, Jupyter): there asgiref's Local gives
        # each async context connections of its own, not the thread's (asgiref/local.py).
        wrappers = [connections[alias] for alias in connections]
    else:
        return _NONE  # the ORM refuses to run in an event loop thread: no atomic() here
    for connection in wrappers:
        if connection.in_atomic_block:
            break
    else:
        return _NONE  # the common case, on every defer(): no list built
    return [c for c in wrappers if c.in_atomic_block and _real_blocks(c)]


_NONE: list[BaseDatabaseWrapper] = []  # never changed


class _Gate:
    __slots__ = ("__weakref__", "call", "connection", "opened", "pid")

    def __init__(self, call: DeferredCall, connection: BaseDatabaseWrapper) -> None:
        self.call = call
        self.connection = connection
        self.opened = [False]  # shared with the finalizer, which must not reference the gate
        # A process forked inside the atomic block has a copy of the gate: the call is the
        # parent's, and the child must neither run it nor count it.
        self.pid = os.getpid()

    def __call__(self) -> None:
        self.opened[0] = True
        if self.pid == os.getpid():
            _gate_opened(self.call)


def _gate_opened(call: DeferredCall) -> None:
    with transition_lock:
        call.gates -= 1
        settled = _take_on_settled(call) if call.gates == 0 else None
    if settled is not None:
        settled(call)


def _gate_dropped(call: DeferredCall, opened: list[bool], pid: int) -> None:
    # A weakref.finalize callback: usually run at once by the rollback that dropped the gate,
    # but the garbage collector runs it at any point when the gate was cyclic garbage, maybe
    # while this very thread holds transition_lock. Never wait for the lock here.
    if opened[0] or pid != os.getpid():
        return
    if not transition_lock.acquire(blocking=False):
        later(_discard, call)
        return
    try:
        settled = _discard_locked(call)
    finally:
        transition_lock.release()
    if settled is not None:
        settled(call)


def _discard(call: DeferredCall) -> None:
    with transition_lock:
        settled = _discard_locked(call)
    if settled is not None:
        settled(call)


def _discard_locked(call: DeferredCall) -> Callable[[DeferredCall], None] | None:
    call.gates -= 1
    if call.state in (State.PENDING, State.WAITING):
        call.state = State.DISCARDED
    return _take_on_settled(call)  # one rollback settles it, whatever the other gates do


def _take_on_settled(call: DeferredCall) -> Callable[[DeferredCall], None] | None:
    # Called with transition_lock held: a call is settled at most once.
    settled, call.on_settled = call.on_settled, None
    return settled


def wait_for_commit(call: DeferredCall, open_connections: list[BaseDatabaseWrapper]) -> None:
    """Hold the call until every one of these connections commits; discard it on rollback."""
    call.gates = len(open_connections)
    for connection in open_connections:
        gate = _Gate(call, connection)
        weakref.finalize(gate, _gate_dropped, call, gate.opened, gate.pid)
        connection.on_commit(gate, robust=True)


def settle_test_transactions(gated: list[BaseDatabaseWrapper]) -> None:
    """Open the gates on connections whose real atomic blocks have all exited.

    Only a TestCase transaction can leave gates behind that way: a real outermost block runs
    them on commit.
    """
    for connection in gated:
        if _real_blocks(connection):
            continue
        mine = [entry[1] for entry in connection.run_on_commit if isinstance(entry[1], _Gate)]
        if not mine:
            continue
        connection.run_on_commit = [
            entry for entry in connection.run_on_commit if not isinstance(entry[1], _Gate)
        ]
        for gate in mine:
            gate()
