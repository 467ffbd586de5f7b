"""What may be deferred: refused at the call site, with an error that says the fix.

Refused: a non-callable, a coroutine object, an ``UploadedFile`` (Django closes it once the
response is sent) and the request (finished by then). Arguments are looked at, and so are the
containers among them one level deep (``request.FILES``, ``getlist()``, a dict of uploads), a
``functools.partial``'s arguments and the attributes of a bound method's object (a form holding
uploads in ``files`` or ``cleaned_data``); no deeper: this runs on the request path.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Iterable
from itertools import chain
from types import FunctionType, MethodType
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, QueryDict
from django.utils.datastructures import MultiValueDict

from .deferred import is_task

# Most arguments are one of these, which hold nothing refused: one set lookup skips them.
_PLAIN = frozenset({str, int, float, bool, type(None), bytes})
_SEQUENCES = frozenset({list, tuple, set, frozenset})
_CONTAINERS = (*_SEQUENCES, dict)  # looked into; dict: also MultiValueDict (request.FILES)
# Bigger containers are not looked into (a list of ids): a request holds no more uploads than
# DATA_UPLOAD_MAX_NUMBER_FILES, 100 by default.
_MAX_ITEMS = 100
_OWNER_CONTAINERS = frozenset({*_SEQUENCES, dict, MultiValueDict, QueryDict})
_refused: tuple[type, ...] = (UploadedFile, HttpRequest)  # DRF's Request once it is loaded


def validate(where: str, fn: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if type(fn) is not FunctionType:
        _validate_callable(where, fn, args, kwargs)
    for value in args:
        if type(value) not in _PLAIN:
            _refuse(where, None, value, _refused_types())
    for value in kwargs.values():
        if type(value) not in _PLAIN:
            _refuse(where, None, value, _refused_types())


def _validate_callable(
    where: str, fn: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    if inspect.iscoroutine(fn):
        fn.close()  # it will never be awaited; spare the "never awaited" warning
        raise TypeError(
            f"{where} needs a coroutine function and its arguments, got a coroutine object: "
            f"write defer(fn, *args), not defer(fn(*args))."
        )
    if not callable(fn):
        if not is_task(fn):
            # defer(send_mail(...)) has sent the mail already, and deferred what it returned.
            raise TypeError(
                f"{where} needs a callable, got {type(fn).__name__!r}: write defer(fn, *args), "
                "not defer(fn(*args)), which calls fn at once."
            )
        # A Task's arguments must survive JSON on every backend: say so here, not in a worker.
        from .tasks import json_round_trip

        json_round_trip([list(args), kwargs], f"{where}: the arguments of a Task")
        return
    if isinstance(fn, functools.partial):
        for value in (*fn.args, *fn.keywords.values()):
            if type(value) not in _PLAIN:
                _refuse(where, fn, value, _refused_types())
        fn = fn.func
    if isinstance(fn, MethodType):
        owner = fn.__self__
        _refuse(where, fn, owner, _refused_types())
        if not isinstance(owner, type) and hasattr(owner, "__dict__"):
            # Uploads only: forms and serializers often keep the request and use what of it
            # outlives the response; an upload does not outlive it. Containers only of the
            # types uploads come in (form.files, form.cleaned_data), not a form's ErrorDict.
            for value in vars(owner).values():
                kind = type(value)
                if (kind in _OWNER_CONTAINERS and value) or issubclass(kind, UploadedFile):
                    _refuse(where, owner, value, (UploadedFile,))


def _refuse(where: str, holder: object, value: Any, refused: tuple[type, ...]) -> None:
    """Raise if ``value`` is refused, or a container holding a refused item.

    ``holder``: what ``value`` was found in, for the message (None: it is an argument).
    """
    kind = type(value)  # not isinstance(): it would evaluate a lazy object (request.user)
    items: Iterable[object]
    if kind in _SEQUENCES:
        items = value
    elif kind is dict:
        items = value.values()
    elif issubclass(kind, refused):
        raise _error(where, holder, None, kind)
    elif issubclass(kind, MultiValueDict):
        items = chain.from_iterable(dict.values(value))
    elif issubclass(kind, _CONTAINERS):
        items = value.values() if issubclass(kind, dict) else value
    else:
        return
    if not 0 < len(value) <= _MAX_ITEMS:
        return
    for inner in set(map(type, items)) - _PLAIN:  # in C; only the distinct types are checked
        if issubclass(inner, refused):
            raise _error(where, holder, kind, inner)


def _error(where: str, holder: object, container: type | None, kind: type) -> TypeError:
    how = ""
    if isinstance(holder, functools.partial):
        how = "a functools.partial holding "
    elif isinstance(holder, MethodType):
        how = "a bound method of "
    elif holder is not None:
        how = f"a bound method of {_a(type(holder).__name__)} holding "
    if container is not None:
        how += f"{_a(container.__name__)} holding "
    if issubclass(kind, UploadedFile):
        return TypeError(
            f"{where} got {how}an UploadedFile, which Django closes once the response is sent. "
            "Save it first (e.g. default_storage.save(name, upload)) and defer the saved name."
        )
    return TypeError(
        f"{where} got {how}the request, which is finished by the time the call runs. "
        "Pass the values the call needs instead (request.user.pk, request.POST.dict())."
    )


def _refused_types() -> tuple[type, ...]:
    """UploadedFile, HttpRequest, and Django REST framework's Request (which wraps an
    HttpRequest) once something imported it: never imported here."""
    global _refused
    if len(_refused) == 2:
        request_class = getattr(sys.modules.get("rest_framework.request"), "Request", None)
        if isinstance(request_class, type):
            _refused = (*_refused, request_class)
    return _refused


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "AEIOUaeiou" else f"a {noun}"
