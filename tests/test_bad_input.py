"""Bad input fails at the call site, with an error that says the fix, and nothing is deferred."""

from __future__ import annotations

import collections
import functools
import math
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory
from django.utils.functional import SimpleLazyObject

import after_response
from after_response import validation
from after_response.testing import capture_deferred

from . import recorder

ROOT = Path(__file__).resolve().parent.parent
SAVE_IT_FIRST = "which Django closes once the response is sent. Save it first"


def upload(name: str = "books.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, b"title\n")


@pytest.mark.parametrize(
    ("how", "holder"),
    [
        ("getlist", "a list holding"),
        ("FILES", "a MultiValueDict holding"),
        ("dict", "a dict holding"),
        ("tuple keyword", "a tuple holding"),
        ("partial and args", "a list holding"),
        ("partial", "a functools.partial holding"),
        ("partial keyword", "a functools.partial holding a list holding"),
        ("form method", "a bound method of an UploadForm holding a MultiValueDict holding"),
        ("upload method", "a bound method of"),
    ],
)
@pytest.mark.django_db
def test_an_upload_in_a_container_is_refused_at_the_call_site(how, holder):
    response = Client().post(f"/defer-an-upload/{how}/", {"f": [upload("a.csv"), upload("b.csv")]})
    assert response.status_code == 400, response.content
    assert response.content.decode().startswith(
        f"request.defer() got {holder} an UploadedFile, {SAVE_IT_FIRST}"
    )
    assert after_response.drain(recorder.WAIT)
    assert recorder.calls == []


@pytest.mark.parametrize("how", ["the name", "form without upload"])
@pytest.mark.django_db
def test_what_holds_no_upload_is_accepted(how):
    response = Client().post(f"/defer-an-upload/{how}/", {"f": upload()})
    assert response.content == b"accepted"


def test_partials_and_bound_methods_are_looked_into():
    """What validate() refuses once queues.py hands it these without arguments."""

    class Form:
        def __init__(self, **attributes: object) -> None:
            vars(self).update(attributes)

        def save(self) -> None:
            pass

    request = RequestFactory().get("/")
    refused = [
        (functools.partial(print, upload()), "a functools.partial holding an UploadedFile"),
        (functools.partial(print, file=[upload()]), "a functools.partial holding a list holding"),
        (functools.partial(print, request), "a functools.partial holding the request"),
        (Form(cleaned_data={"f": upload()}).save, "a bound method of a Form holding a dict"),
        (Form(upload=upload()).save, "a bound method of a Form holding an UploadedFile"),
        (upload().chunks, "a bound method of an UploadedFile"),
        (request.get_full_path, "a bound method of the request"),
        (functools.partial(upload().chunks), "a bound method of an UploadedFile"),
    ]
    for fn, message in refused:
        with pytest.raises(TypeError, match=f"got {message}"):
            validation.validate("request.defer()", fn, (), {})
    # A form may keep the request; containers bigger than any request's uploads are not read.
    validation.validate("request.defer()", Form(request=request).save, (), {})
    validation.validate("request.defer()", Form(cache=[*range(200), upload()]).save, (), {})
    validation.validate("request.defer()", SimpleUploadedFile.from_dict, ({},), {})  # a class's


def test_subclasses_of_the_containers_are_looked_into_too():
    class Uploads(list[object]):
        pass

    for container in (Uploads([upload()]), collections.OrderedDict(f=upload())):
        with pytest.raises(TypeError, match=f"got an? {type(container).__name__} holding an"):
            after_response.defer(print, container)


def test_a_lazy_argument_is_not_evaluated():
    lazy_user = SimpleLazyObject(lambda: recorder.record("evaluated"))
    with capture_deferred() as captured:  # kept, never run: only the check may touch it
        after_response.defer(print, lazy_user, [lazy_user])
    assert len(captured) == 1
    assert recorder.calls == []


def test_a_call_instead_of_a_callable_says_so():
    # defer(send_mail(...)) has sent the mail already, and deferred what it returned: the
    # number of messages sent. (Not send_mail itself: Django 6.1 warns without MAILERS.)
    sent = len(["the message"])
    with pytest.raises(
        TypeError,
        match=r"needs a callable, got 'int': write defer\(fn, \*args\), not defer\(fn\(\*args\)\)",
    ):
        after_response.defer(sent)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["defer", "add"])
def test_the_hint_on_the_request_queue(where, rf):
    from after_response.queues import ResponseQueue

    queue = ResponseQueue(rf.get("/"))
    with pytest.raises(TypeError, match=r"got 'float': write defer\(fn, \*args\)"):
        getattr(queue, where)(math.pi)


# -- Django REST framework ----------------------------------------------------------------


def test_a_rest_framework_request_is_refused_like_the_request(monkeypatch):
    drf = pytest.importorskip("rest_framework.request")
    from rest_framework.parsers import MultiPartParser

    request = drf.Request(RequestFactory().get("/"))
    monkeypatch.setattr(validation, "_refused", validation._refused[:2])  # as if loaded later
    with pytest.raises(TypeError, match="got the request, which is finished"):
        after_response.defer(print, request)
    with pytest.raises(TypeError, match="got a dict holding the request"):
        after_response.defer(print, context={"request": request})
    posted = drf.Request(
        RequestFactory().post("/", {"f": upload(), "title": "x"}), parsers=[MultiPartParser()]
    )
    with pytest.raises(
        TypeError, match=f"got a QueryDict holding an UploadedFile, {SAVE_IT_FIRST}"
    ):
        after_response.defer(print, posted.data)


def test_rest_framework_is_never_imported_for_the_check():
    code = (
        "import django, sys; django.setup();"
        "from after_response.validation import validate;"
        "validate('defer()', print, ([1], {'a': object()}), {});"
        "assert 'rest_framework' not in sys.modules, 'imported'"
    )
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=60)
