"""What may be deferred: refused at the call site, with an error that says the fix."""

from __future__ import annotations

import inspect
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest

from .deferred import is_task

_REFUSED = (UploadedFile, HttpRequest)


def validate(where: str, fn: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if inspect.iscoroutine(fn):
        fn.close()  # it will never be awaited; spare the "never awaited" warning
        raise TypeError(
            f"{where} needs a coroutine function and its arguments, got a coroutine object: "
            f"write defer(fn, *args), not defer(fn(*args))."
        )
    if not callable(fn):
        if not is_task(fn):
            raise TypeError(f"{where} needs a callable, got {type(fn).__name__!r}.")
        # A Task's arguments must survive JSON on every backend: say so here, not in a worker.
        from .tasks import json_round_trip

        json_round_trip([list(args), kwargs], f"{where}: the arguments of a Task")
    for value in (*args, *kwargs.values()):
        if not isinstance(value, _REFUSED):
            continue
        if isinstance(value, UploadedFile):
            raise TypeError(
                f"{where} got an UploadedFile, which Django closes once the response is sent. "
                "Save it first (e.g. default_storage.save(name, upload)) and defer the saved name."
            )
        if isinstance(value, HttpRequest):
            raise TypeError(
                f"{where} got the request, which is finished by the time the call runs. "
                "Pass the values the call needs instead (request.user.pk, request.POST.dict())."
            )
