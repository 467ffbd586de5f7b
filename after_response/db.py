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


def after_work() -> None:
    """After it (also when it raised): what Django does after a request. Never raises in
    place of the work's own outcome; the next unit of work closes them again before it starts."""
    try:
        close_old_connections()
    except Exception:
        logger.exception("after_response could not close this thread's database connections")


@contextmanager
def like_a_request() -> Iterator[None]:
    """Around one unit of work: what Django does around a request, in this thread."""
    before_work()
    try:
        yield
    finally:
        after_work()


def close_thread_connections() -> None:
    """When a thread that ran work ends: its connections would otherwise never be closed."""
    connections.close_all()
