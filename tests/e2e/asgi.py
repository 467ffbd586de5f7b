"""The ASGI entry point, as README tells: Django's application, draining on lifespan shutdown."""

from __future__ import annotations

from after_response.asgi import get_asgi_application

application = get_asgi_application()
