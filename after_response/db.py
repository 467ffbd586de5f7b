"""The one place that opens and closes database connections around work in threads.

Django does this around each request (``request_started`` / ``request_finished``); a thread that
runs ORM code outside a request must do it itself, or its connections leak: stale backends, a
psycopg pool that runs dry, "database is being accessed by other users" at test teardown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from .deferred import callable_name

_this_thread = threading.local()
logger = logging.getLogger("after_response")


def thread_connections() -> list[BaseDatabaseWrapper]:
    """This thread's connection wrappers, one per alias (not necessarily connected).

    A sync thread's wrappers live as long as the thread (ConnectionHandler keeps them in a
    thread-critical asgiref Local, a plain threading.local there), so they are looked up once:
    each lookup through ``connections`` costs an asgiref Local access per alias.
    """
    try:
        wrappers: list[BaseDatabaseWrapper] = _this_thread.wrappers
    except AttributeError:
        wrappers = _this_thread.wrappers = [connections[alias] for alias in connections]
    return wrappers


def close_old_connections() -> None:
    """``django.db.close_old_connections()``, for this thread's wrappers: no lookups."""
    for connection in thread_connections():
        if connection.connection is not None:  # the method's own first test, without the call
            connection.close_if_unusable_or_obsolete()


def before_work() -> None:
    """Before one unit of work in this thread: what Django does before a request."""
    for connection in thread_connections():
        if connection.queries_log:  # filled under DEBUG only
            connection.queries_log.clear()  # reset_queries()
    close_old_connections()


def after_work(work: object = "Work in this thread") -> None:
    """After it (also when it raised): what Django does after a request, and a clean slate for
    the next unit of work in this thread. ``work`` (the callable, or a name) is named in the
    warning if it left a transaction open. Never raises in place of the work's own outcome; the
    next unit of work closes the connections again before it starts."""
    try:
        for connection in thread_connections():
            # Inside an atomic block the connection is open, or closed in it and not None.
            if connection.connection is not None and (
                connection.in_atomic_block
                or connection.autocommit != connection.settings_dict["AUTOCOMMIT"]
            ):
                _roll_back_what_was_left(connection, work)
        close_old_connections()
    except Exception:
        logger.exception("after_response could not close this thread's database connections")


def _roll_back_what_was_left(connection: BaseDatabaseWrapper, work: object) -> None:
    """Leave every atomic block as an exception would, roll back, restore autocommit.

    Otherwise every later unit of work in this thread fails ("You can't execute queries until
    the end of the 'atomic' block"), or runs inside a transaction that never commits.
    """
    if connection.in_atomic_block:
        left, fix = "an atomic block open", "Exit every atomic block you enter (with atomic(): ...)"
    else:
        left, fix = "autocommit off", "Turn it back on before returning (set_autocommit(True))"
    logger.warning(
        "%s left %s on the %r database: rolled back, so that the next work in this thread "
        "starts clean. %s.",
        work if isinstance(work, str) else callable_name(work),
        left,
        connection.alias,
        fix,
    )
    # Atomic.__exit__'s bookkeeping for all the blocks at once; the callbacks registered with
    # on_commit() go with the rollback.
    connection.in_atomic_block = False
    connection.atomic_blocks = []
    connection.savepoint_ids = []
    connection.needs_rollback = False
    connection.commit_on_exit = True
    connection.run_on_commit = []
    if connection.closed_in_transaction:
        connection.connection = None  # closed inside the block: the database rolled back
        return
    try:
        connection.rollback()
        connection.set_autocommit(connection.settings_dict["AUTOCOMMIT"])
    except Exception:
        connection.close()  # outside any block now, so it lets go of the connection


@contextmanager
def like_a_request(work: object = "Work in this thread") -> Iterator[None]:
    """Around one unit of work: what Django does around a request, in this thread."""
    before_work()
    try:
        yield
    finally:
        after_work(work)


def close_thread_connections() -> None:
    """When a thread that ran work ends: its connections would otherwise never be closed."""
    connections.close_all()
