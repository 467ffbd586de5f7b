"""The request's language and time zone, taken in about 0.1 µs and read later, in a worker.

``translation.get_language()`` and ``timezone.get_current_timezone()`` each cost a few
microseconds (an asgiref ``Local`` read under a lock; a missing value raises and catches an
``AttributeError``). The first ``defer()`` of every request would pay both. Instead it takes a
snapshot: ``contextvars.copy_context()`` and the thread's id. A worker reads the two values out
of the snapshot the way asgiref's ``Local`` would have read them in the request's thread.

That relies on how asgiref stores a ``Local``'s data (django/asgiref, ``asgiref/local.py``): a
``ContextVar`` at ``Local._storage._data``, holding a dict that is replaced, never changed in
place, on every write (asgiref >= 3.9), wrapped since 3.12 in a ``_Storage`` tagged with the id
of the thread that owns it (data inherited by another thread is ignored). A self-test at import
checks exactly that on a probe ``Local``; if it fails (asgiref 3.8 changes the dict in place),
``available`` is False and the values are read at capture time through Django's public API.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from asgiref.local import Local
from django.conf import settings
from django.utils import timezone

MISSING: Any = object()
Snapshot = tuple[contextvars.Context, int]  # a copy of the context, and the thread's id

Reader = Callable[[Snapshot], Any]


def take() -> Snapshot:
    return contextvars.copy_context(), threading.get_ident()


def _reader(local: object) -> Reader | None:
    """Read ``local.value`` out of a snapshot, as ``getattr(local, "value")`` would have."""
    cvar = getattr(getattr(local, "_storage", None), "_data", None)
    if not isinstance(cvar, contextvars.ContextVar):
        return None

    def read(snapshot: Snapshot) -> Any:
        context, thread_id = snapshot
        storage = context.get(cvar)
        if storage is None:
            return MISSING
        if isinstance(storage, dict):  # asgiref 3.9 to 3.11
            return storage.get("value", MISSING)
        if storage.thread_id != thread_id:  # asgiref >= 3.12: inherited, not the thread's own
            return MISSING
        return storage.data.get("value", MISSING)

    return read


def _works() -> bool:
    probe = Local()
    read = _reader(probe)
    if read is None:
        return False

    def scenario() -> bool:
        empty = take()
        probe.value = "request"
        snapshot = take()
        probe.value = "a later request"  # must not show through the earlier snapshot
        return read(empty) is MISSING and read(snapshot) == "request"

    try:
        return contextvars.Context().run(scenario)
    except Exception:  # any other layout: use the public API
        return False


def _django_reader(module: str) -> Reader | None:
    import importlib

    return _reader(getattr(importlib.import_module(module), "_active", None))


available = _works()
_read_translation = _django_reader("django.utils.translation.trans_real") if available else None
_read_timezone = _django_reader("django.utils.timezone") if available else None
available = _read_translation is not None and _read_timezone is not None


def language(snapshot: Snapshot) -> str | None:
    """What ``translation.get_language()`` returned when the snapshot was taken."""
    if not settings.USE_I18N:
        return None  # no translation machinery: nothing to activate in a worker
    assert _read_translation is not None
    active = _read_translation(snapshot)
    if active is not MISSING and active is not None:
        try:
            code: str | None = active.to_language()
            return code
        except AttributeError:  # not a DjangoTranslation: trans_real falls back as well
            pass
    return settings.LANGUAGE_CODE


def current_timezone(snapshot: Snapshot) -> tzinfo:
    """What ``timezone.get_current_timezone()`` returned when the snapshot was taken."""
    assert _read_timezone is not None
    active: tzinfo = _read_timezone(snapshot)
    return timezone.get_default_timezone() if active is MISSING else active
