"""How this process runs work and drains it at exit, server by server.

Which exit hooks run where (measured; /work/shared/SERVER-FACTS.md):

* plain Python, gunicorn, daphne, hypercorn: ``atexit``.
* granian: ``threading._register_atexit``, then ``os._exit`` (no ``atexit``).
* uWSGI: ``uwsgi.atexit``, then the two above; with ``--skip-atexit-teardown`` only
  ``uwsgi.atexit``.
* uvicorn (>= 0.29) re-raises SIGTERM after the ASGI lifespan shutdown: none of the above runs.
  Only the lifespan wrapper in asgi.py drains there.

All of them are installed; shutdown is idempotent, so whichever runs first drains and the others
return at once.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

THREADS = "threads"
GEVENT = "gevent"  # threading is monkey-patched: workers are greenlets
UWSGI_WITHOUT_THREADS = "inline (uWSGI without threads)"


def mode() -> str:
    """How deferred calls can run in this process."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        return GEVENT
    uwsgi = sys.modules.get("uwsgi")
    # uwsgi.has_threads, not uwsgi.opt["enable-threads"]: the option misses --threads > 1.
    if uwsgi is not None and not getattr(uwsgi, "has_threads", True):
        return UWSGI_WITHOUT_THREADS
    return THREADS


UWSGI_WITHOUT_THREADS_MESSAGE = (
    "uWSGI runs without threads, so deferred calls run inline when the response closes, "
    "delaying the client. Add --enable-threads (or --threads 2) to uWSGI."
)


NO_EXIT_HOOK_MESSAGE = (
    "uvicorn runs no exit hook and this application answered no ASGI lifespan: deferred calls "
    "still running or queued at SIGTERM will be lost without a trace. Serve "
    "after_response.asgi.get_asgi_application() (or wrap yours in DrainOnShutdown) and keep "
    "uvicorn's lifespan on."
)

# Set by asgi.DrainOnShutdown when the server starts the lifespan protocol with it.
lifespan_drain = False


def exit_hook_problem() -> str | None:
    """Why this process would lose its calls at a graceful stop, or None.

    uvicorn, standalone or as gunicorn's UvicornWorker, re-raises SIGTERM after the lifespan
    shutdown: no ``atexit``, no ``threading`` exit hook (SERVER-FACTS.md). Only the lifespan
    wrapper drains there; a server sends the lifespan startup before its first request.
    """
    if "uvicorn" in sys.modules and not lifespan_drain:
        return NO_EXIT_HOOK_MESSAGE
    return None


def warn_if_uwsgi_without_threads() -> None:
    """At start-up, where it will be seen (the pool logs it again at first use, and shows it in
    stats())."""
    if mode() == UWSGI_WITHOUT_THREADS:
        logging.getLogger("after_response").error(
            "after_response: %s", UWSGI_WITHOUT_THREADS_MESSAGE
        )


def install_exit_hooks(shutdown: Callable[[], object]) -> None:
    atexit.register(shutdown)
    # Private, and the only hook granian runs for WSGI apps (it ends with os._exit). It also
    # runs before Python joins non-daemon threads, so the drain is not stuck behind them.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        with contextlib.suppress(RuntimeError):  # "can't register atexit after shutdown"
            register(shutdown)
    uwsgi: Any = sys.modules.get("uwsgi")
    if uwsgi is not None:
        previous = getattr(uwsgi, "atexit", None)

        def uwsgi_atexit() -> None:
            try:
                shutdown()
            finally:
                if previous is not None:
                    previous()

        uwsgi.atexit = uwsgi_atexit
