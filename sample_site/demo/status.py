"""Use case 6, the status page's data: a CallRecord row per deferred call's outcome.

The receivers run in the worker thread that ran the call, right after it, inside the
connection handling after_response gives each call (stale connections closed before and after).
So they may use the ORM like the call itself, but:

* they must be quick and must not raise: the library sends the signals with ``send_robust``,
  which would swallow an exception silently, so a failed write is logged here;
* they must not defer anything themselves (each record would defer another call);
* with several server processes, per-process memory would show one process only: the rows in
  the database add all of them up. Old rows are pruned, a few at a time.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from after_response import DeferredCall, signals

from .models import CallRecord

logger = logging.getLogger(__name__)

KEEP_RECORDS = 1000  # the status page needs the recent past only
PRUNE_EVERY = 100  # records


def record_finished(sender: Any, call: DeferredCall, duration: float, **kwargs: Any) -> None:
    _record(call, "done", duration, "")


def record_failed(
    sender: Any, call: DeferredCall, exception: BaseException, duration: float, **kwargs: Any
) -> None:
    _record(call, "failed", duration, f"{type(exception).__name__}: {exception}"[:500])


def _record(call: DeferredCall, outcome: str, duration: float, error: str) -> None:
    try:
        record = CallRecord.objects.create(
            name=call.name[:200],
            outcome=outcome,
            duration=duration,
            error=error,
            pid=os.getpid(),
            thread=threading.current_thread().name[:100],
        )
        if record.pk % PRUNE_EVERY == 0:
            CallRecord.objects.filter(pk__lte=record.pk - KEEP_RECORDS).delete()
    except Exception:
        logger.exception("Could not record the outcome of %s", call.name)


def connect() -> None:
    signals.call_finished.connect(record_finished, dispatch_uid="demo.status.finished")
    signals.call_failed.connect(record_failed, dispatch_uid="demo.status.failed")
