"""Signals sent around each deferred call, in the thread that runs it.

``sender`` is the deferred callable; ``call`` is the ``DeferredCall``. Exactly one of
``call_finished`` and ``call_failed`` follows each ``call_started``.
"""

from django.dispatch import Signal

call_started = Signal()  # call
call_finished = Signal()  # call, duration (seconds)
call_failed = Signal()  # call, exception, duration (seconds)
