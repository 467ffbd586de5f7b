import pytest

from . import recorder


@pytest.mark.django_db
def test_defer_runs_after_response(client):
    response = client.get("/defer-two/")
    assert response.status_code == 200
    assert recorder.wait_for(2) == ["first", "second"]
