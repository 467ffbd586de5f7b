"""Django REST framework and django-ninja views, called through their own test tools, which
bypass the middleware: ``deferring()`` (and the fixture of that name) gives their requests
``defer``; the same views under the middleware need nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import path

import after_response
from after_response.testing import capture_deferred, deferring, deferring_attributes

from . import recorder

rest_framework = pytest.importorskip("rest_framework")
from rest_framework.response import Response  # noqa: E402
from rest_framework.test import APIRequestFactory  # noqa: E402
from rest_framework.views import APIView  # noqa: E402


def welcome(email: str) -> None:
    recorder.record("welcome", email)


class SignUp(APIView):
    authentication_classes = ()
    permission_classes = ()

    def post(self, request: Any) -> Response:
        request.defer(welcome, request.data["email"])
        return Response({"ok": True}, status=201)


urlpatterns = [path("drf/sign-up/", SignUp.as_view())]


def test_a_drf_view_called_with_apirequestfactory_defers_through_deferring():
    request = deferring(APIRequestFactory().post("/", {"email": "a@example.com"}, format="json"))
    with capture_deferred() as calls:
        response = SignUp.as_view()(request)
    assert response.status_code == 201
    assert [call.name for call in calls] == ["tests.test_frameworks.welcome"]
    assert calls[0].args == ("a@example.com",)


def test_the_deferring_fixture_with_pytest_djangos_rf(deferring, rf):
    from tests import views

    with capture_deferred(execute=True) as calls:
        views.defer_two(deferring(rf.get("/defer-two/")))
    assert len(calls) == 2


@override_settings(ROOT_URLCONF=__name__)
def test_a_drf_view_under_the_middleware_needs_nothing():
    response = Client().post(
        "/drf/sign-up/", {"email": "b@example.com"}, content_type="application/json"
    )
    assert response.status_code == 201
    assert after_response.drain(recorder.WAIT)
    assert recorder.calls == [("welcome", "b@example.com")]


def test_a_django_ninja_view_through_its_test_client():
    ninja = pytest.importorskip("ninja")
    from ninja.testing import TestClient

    router = ninja.Router()

    @router.post("/sign-up")
    def sign_up(request: Any, email: str) -> dict[str, bool]:
        request.defer(welcome, email)
        return {"ok": True}

    client = TestClient(router)
    with capture_deferred(execute=True) as calls:
        response = client.post("/sign-up?email=c@example.com", **deferring_attributes())
    assert response.status_code == 200
    assert [call.args for call in calls] == [("c@example.com",)]
    assert recorder.calls == [("welcome", "c@example.com")]
