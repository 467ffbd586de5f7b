"""The WSGI entry point of the drain tests.

With ``AFTER_RESPONSE_E2E_DEFER_AT_IMPORT=<name>`` it defers a call that writes the row
``<name>`` while it is imported, and waits for it. Under ``gunicorn --preload`` and uWSGI without
``--lazy-apps`` the master process imports it, so the master's pool has started (its threads
are idle, not gone) when the workers are forked: the workers must still run what their requests
defer.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

import after_response

application = get_wsgi_application()

if name := os.environ.get("AFTER_RESPONSE_E2E_DEFER_AT_IMPORT"):
    from tests.e2e.drain import slow_insert

    after_response.defer(slow_insert, name, 0.0)
    # Forking while a thread runs Python can leave the child a lock (an import's) that the
    # thread held and never releases: the master waits for its own work before any fork.
    if not after_response.drain(30.0):
        raise RuntimeError(f"the call deferred at import never finished: {after_response.stats()}")
