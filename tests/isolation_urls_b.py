"""The urlconf that tests/isolation.py's middleware sets as request.urlconf for site 'b'."""

from .isolation import urlpatterns_for

urlpatterns = urlpatterns_for("b")
